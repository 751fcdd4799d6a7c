"""The detection side: dataset formats and import, demo data, YOLO training, pseudo-labels, copy-paste, realism, evaluation, report."""
