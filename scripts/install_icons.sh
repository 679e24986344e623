#!/usr/bin/env bash
# Install the Debian icon-theme packages that the icon dataset renders from (icon-packages.txt
# beside this script) plus librsvg2-bin (rsvg-convert renders the SVG icons), when root;
# otherwise the icon dataset is built from the themes the machine already has. Safe to run
# again.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/install_debian_packages.sh" install_icons "$here/icon-packages.txt" librsvg2-bin
themes=$(find /usr/share/icons -mindepth 2 -maxdepth 2 -name index.theme | wc -l)
echo "install_icons: $themes icon themes in /usr/share/icons."
