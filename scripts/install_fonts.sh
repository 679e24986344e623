#!/usr/bin/env bash
# Install the Debian font packages that the glyph dataset renders from.
#
# Reads package names (one per line, '#' starts a comment) from font-packages.txt beside
# this script. As root with apt-get available, installs the ones not yet installed, plus
# fontconfig, skipping names the archive does not have. Otherwise it installs nothing and
# the glyph dataset is built from the fonts the machine already has. Safe to run again:
# when everything is installed it only checks `dpkg -s` and exits.
set -euo pipefail

package_list="$(dirname "$0")/font-packages.txt"
if [[ ! -r "$package_list" ]]; then
    echo "install_fonts: package list not found: $package_list" >&2
    exit 1
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_fonts: not root or no apt-get; using the fonts this machine already has."
    exit 0
fi

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$package_list" | grep -v '^$')
wanted+=(fontconfig)

missing=()
for package in "${wanted[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_fonts: all ${#wanted[@]} packages already installed."
    exit 0
fi

echo "install_fonts: installing ${#missing[@]} of ${#wanted[@]} packages (apt-get update first)."
apt-get update -qq

available=()
for package in "${missing[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then
        available+=("$package")
    else
        echo "install_fonts: skipping $package (not in the archive)."
    fi
done

if [[ ${#available[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${available[@]}" >/dev/null
fi
echo "install_fonts: done; $(fc-list 2>/dev/null | wc -l) font faces known to fontconfig."
