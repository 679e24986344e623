#!/usr/bin/env bash
# Install the Debian icon-theme packages that the icon dataset renders from.
#
# Reads package names (one per line, '#' starts a comment) from icon-packages.txt beside
# this script. As root with apt-get available, installs the ones not yet installed, plus
# librsvg2-bin (rsvg-convert renders the SVG icons), skipping names the archive does not have
# and saying which. Otherwise it installs nothing and the icon dataset is built from the themes
# the machine already has. Safe to run again: when everything is installed it only checks
# `dpkg -s` and exits.
set -euo pipefail

package_list="$(dirname "$0")/icon-packages.txt"
if [[ ! -r "$package_list" ]]; then
    echo "install_icons: package list not found: $package_list" >&2
    exit 1
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_icons: not root or no apt-get; using the icon themes this machine already has."
    exit 0
fi

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$package_list" | grep -v '^$')
wanted+=(librsvg2-bin)

missing=()
for package in "${wanted[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_icons: all ${#wanted[@]} packages already installed."
    exit 0
fi

echo "install_icons: installing ${#missing[@]} of ${#wanted[@]} packages (apt-get update first)."
apt-get update -qq

available=()
for package in "${missing[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then
        available+=("$package")
    else
        echo "install_icons: skipping $package (not in the archive)."
    fi
done

if [[ ${#available[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${available[@]}" >/dev/null
fi
themes=$(find /usr/share/icons -mindepth 2 -maxdepth 2 -name index.theme | wc -l)
echo "install_icons: done; $themes icon themes in /usr/share/icons."
