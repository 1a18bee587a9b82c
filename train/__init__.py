"""fkp-live's training wing: datasets, augmentation, networks, the fit loop, metrics, export."""
