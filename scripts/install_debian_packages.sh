#!/usr/bin/env bash
# Install the Debian packages named in a list file, plus extra names, when this is possible.
#
#   install_debian_packages.sh LABEL LIST_FILE [EXTRA_PACKAGE ...]
#
# LIST_FILE has one package name per line ('#' starts a comment). As root with apt-get
# available, installs the ones not yet installed, skipping names the archive does not have and
# saying which. Otherwise it installs nothing and says so (the caller then uses what the machine
# already has). Safe to run again: when everything is installed it only checks `dpkg -s`.
# Messages start with LABEL.
set -euo pipefail

label=$1
package_list=$2
shift 2
if [[ ! -r "$package_list" ]]; then
    echo "$label: package list not found: $package_list" >&2
    exit 1
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "$label: not root or no apt-get; installing nothing, using what this machine has."
    exit 0
fi

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$package_list" | grep -v '^$')
wanted+=("$@")

missing=()
for package in "${wanted[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$label: all ${#wanted[@]} packages already installed."
    exit 0
fi

echo "$label: installing ${#missing[@]} of ${#wanted[@]} packages (apt-get update first)."
apt-get update -qq

available=()
for package in "${missing[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then
        available+=("$package")
    else
        echo "$label: skipping $package (not in the archive)."
    fi
done

if [[ ${#available[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${available[@]}" >/dev/null
fi
