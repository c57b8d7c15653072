"""Calibrating a model on its user's labelled images, and estimating with that calibration.

``ttabench calibrate`` (``command``) runs every requested estimator on the calibration meta-set
of a folder of labelled images (suite ``labelled-meta-set``), fits each score estimator's maps,
scores every entry by leave-one-dataset-out and chooses the lowest (``choose``), and writes one
model calibration file (``record``). ``ttabench estimate --calibration FILE`` reads it and
reports the chosen entry's estimate on an unlabelled folder with an interval (``interval``).
"""
