"""Label-noise models: transition matrices, class maps, human labels, and corrupting labels with them.

Pure functions over label arrays (numpy arrays, torch tensors or sequences):

- ``transition_matrix(kind, num_classes, rate, ...)``: the row-stochastic
  ``T[i, j] = P(noisy = j | true = i)`` of ``symmetric`` (conventions
  ``other`` and ``uniform``), ``asymmetric`` (class maps of Patrini et al.,
  CVPR 2017), ``pairflip`` (Han et al., NeurIPS 2018) or ``matrix`` (a file).
- ``corrupt_labels(labels, kind, rate, *, num_classes, seed, ...)``: noisy
  labels with ``exact`` or ``bernoulli`` sampling, or CIFAR-N ``human`` labels,
  and what was realised (``NoisyLabels``).
- ``human_labels(path, key)``: CIFAR-10N / CIFAR-100N labels, loaded without
  running code from the file.
- ``NoiseSpec`` / ``describe_noise``: a noise setting as a value, from and to a dict.

Noise kinds live in the ``NOISE_KINDS`` registry (``register_noise_kind``);
dataset class maps in ``CLASS_MAPS`` (``register_class_map``).
"""

from robustcam.noise.checks import CONVENTIONS, SAMPLINGS, Convention, NoiseFileError, Sampling
from robustcam.noise.class_maps import (
    CIFAR10_CLASSES,
    CLASS_MAPS,
    class_map_for,
    coarse_labels_from_targets,
    datasets_with_class_maps,
    next_in_group_map,
    register_class_map,
)
from robustcam.noise.human import CIFAR10N_KEYS, CIFAR100N_KEYS, human_labels, read_label_file
from robustcam.noise.sampling import NoisyLabels, corrupt_labels, realized_transition_matrix
from robustcam.noise.spec import NoiseSpec, describe_noise
from robustcam.noise.transition import (
    NOISE_KINDS,
    NoiseKind,
    get_noise_kind,
    list_noise_kinds,
    load_transition_matrix,
    register_noise_kind,
    transition_matrix,
    validate_transition_matrix,
)

__all__ = [
    "CIFAR10N_KEYS",
    "CIFAR10_CLASSES",
    "CIFAR100N_KEYS",
    "CLASS_MAPS",
    "CONVENTIONS",
    "NOISE_KINDS",
    "SAMPLINGS",
    "Convention",
    "NoiseFileError",
    "NoiseKind",
    "NoiseSpec",
    "NoisyLabels",
    "Sampling",
    "class_map_for",
    "coarse_labels_from_targets",
    "corrupt_labels",
    "datasets_with_class_maps",
    "describe_noise",
    "get_noise_kind",
    "human_labels",
    "list_noise_kinds",
    "load_transition_matrix",
    "next_in_group_map",
    "read_label_file",
    "realized_transition_matrix",
    "register_class_map",
    "register_noise_kind",
    "transition_matrix",
    "validate_transition_matrix",
]
