"""Training: the U-Net (:mod:`.unet`), the StarDist baseline (:mod:`.stardist`) and the model-folder format both write (:mod:`.model_folder`)."""
