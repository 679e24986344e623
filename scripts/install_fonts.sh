#!/usr/bin/env bash
# Install the Debian font packages that the glyph dataset renders from (font-packages.txt
# beside this script) plus fontconfig, when root; otherwise the glyph dataset is built from the
# fonts the machine already has. Safe to run again.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/install_debian_packages.sh" install_fonts "$here/font-packages.txt" fontconfig
echo "install_fonts: $(fc-list 2>/dev/null | wc -l) font faces known to fontconfig."
