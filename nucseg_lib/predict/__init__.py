"""Applying trained models to new images: the Segmenter behind ``nucseg predict`` (:mod:`.segmenter`), the command line (:mod:`.cli`) and the bioimage.io export (:mod:`.bioimageio`)."""
