"""The data contract both sides share: the prepared dataset, boxes, canvases, synthetic-image manifests
and the figures that draw images with their boxes. Imports only `core`; `augment` and `detection`
import it and never each other."""
