"""nucseg: nuclei segmentation study library."""
