"""Evaluation of C-JEPA encoders: frozen features, linear probe, k-NN, and an offline accuracy metric.

The protocol (features come from the target encoder, mean-pooled over the patch tokens, as
in I-JEPA (Assran et al., CVPR 2023), section 5 and Appendix A, which C-JEPA (Mo & Tong,
NeurIPS 2024) follows):

    encoder (AutoModel: a pretraining checkpoint gives its EMA target encoder)
      -> features.extract_features: one batched no-grad pass over each split, optionally
           cached; pooled features (N, D), or with last_n_layers=n the concatenation of the
           mean-pooled, layer-normed outputs of the last n blocks (N, n * D)
      -> probes.train_linear_probe: standardised features, multinomial logistic regression in
           torch (full-batch L-BFGS or AdamW), weight decay picked on a held-out part of the
           TRAIN features, refit on all of them, scored once on the evaluation split
      -> probes.knn_accuracy: cosine similarity of L2-normalised features, k nearest training
           examples, votes weighted by exp(similarity / T) as in DINO, or plain majority

Modules: `labelled` (datasets and splits), `preprocessing` (transforms and image
processors, on top of `cjepa_hf.data`), `features`, `probes`, `metric` (the accuracy metric
of the fine-tuning script, shipped in this package because `evaluate.load("accuracy")` needs
the Hub). Every name is importable from `cjepa_hf.evaluation` itself.

Shapes: N examples, D encoder width, F feature size, C classes.
"""

from ..data import FASHION_MNIST_HUB_ID, FASHION_MNIST_NAMES, is_fashion_mnist
from ..data import auto_pad_to as default_pad_to  # the former name of the one padding rule
from .features import encode, extract_features, feature_statistics, load_encoder, raw_pixel_features
from .labelled import check_columns, dataset_display_name, label_names, load_labelled_dataset, split_train_eval, subsample
from .metric import ACCURACY_METRIC_PATH, NumpyAccuracy, load_accuracy_metric
from .preprocessing import (
    PROCESSOR_FILE,
    ClassificationTransform,
    ProcessorTransform,
    batch_transform,
    collate_classification,
    eval_image_processor,
    load_model_image_processor,
    model_transforms,
    processor_pad_to,
)
from .probes import (
    DEFAULT_WEIGHT_DECAYS,
    KNN_WEIGHTINGS,
    PROBE_OPTIMIZERS,
    evaluate_features,
    fit_logistic_regression,
    knn_accuracy,
    knn_predict,
    markdown_table,
    probe_results,
    standardize,
    train_linear_probe,
)

__all__ = [
    "ACCURACY_METRIC_PATH",
    "FASHION_MNIST_NAMES",
    "KNN_WEIGHTINGS",
    "PROBE_OPTIMIZERS",
    "PROCESSOR_FILE",
    "DEFAULT_WEIGHT_DECAYS",
    "ClassificationTransform",
    "FASHION_MNIST_HUB_ID",
    "NumpyAccuracy",
    "ProcessorTransform",
    "batch_transform",
    "check_columns",
    "dataset_display_name",
    "collate_classification",
    "default_pad_to",
    "encode",
    "eval_image_processor",
    "evaluate_features",
    "extract_features",
    "feature_statistics",
    "fit_logistic_regression",
    "is_fashion_mnist",
    "load_model_image_processor",
    "model_transforms",
    "probe_results",
    "processor_pad_to",
    "knn_accuracy",
    "knn_predict",
    "label_names",
    "load_accuracy_metric",
    "load_encoder",
    "load_labelled_dataset",
    "markdown_table",
    "raw_pixel_features",
    "split_train_eval",
    "standardize",
    "subsample",
    "train_linear_probe",
]
