"""Dataset builders: each runs once (`sdm data glyphs`, `sdm data icons`, or the demo when its set
is missing) to make an embedded set, an .npz archive and its manifest.json below the dataset
root, which sdm.data.embedded then loads. They read what the machine has installed and need
system tools: fonts, icon themes, rsvg-convert, and dpkg-query for the packages' provenance.

- glyphs: the glyph set, characters rendered from the installed fonts
- icons: the icon set, freedesktop icon names drawn by the installed icon themes
- provenance: the Debian packages (owner, version, licence) of the source files, and the
  manifest written beside each archive
"""
