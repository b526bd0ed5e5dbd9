"""Releases on the Hugging Face Hub: model cards (`cards`, `results`), the release folder
(`release`) and its upload (`upload`).

A release is the EMA *target* encoder of a run (the encoder I-JEPA, Assran et al.,
CVPR 2023, evaluates) saved as a `CJEPAModel` with its remote code, the image processor the
run saved and a model card: `export_release` builds one from a training checkpoint,
`push_release` uploads it. Every name is importable from `cjepa_hf.hub`.
"""

from .cards import (
    BASE_TAGS,
    LIBRARY_NAME,
    MODEL_CARDS_ENV,
    PIPELINE_TAG,
    TEMPLATE_NAME,
    VARIANTS_NAME,
    compute_rows,
    describe_finetune_base,
    infer_variant,
    is_hub_id,
    library_versions,
    load_variants,
    model_cards_dir,
    preprocessing_rows,
    recipe_rows,
    render_model_card,
    run_rows,
    usage_id,
    variant_mismatches,
)
from .release import (
    PROCESSOR_NAME,
    RELEASE_FILES,
    export_release,
    find_image_processor,
    load_image_processor_file,
    load_target_encoder,
    read_training_records,
    release_files,
    save_release,
)
from .results import hub_dataset_id, judgement_results, judgement_text, load_results, local_dataset_name, to_eval_result
from .upload import HubUnreachableError, PushedRelease, push_release

__all__ = [
    "BASE_TAGS",
    "HubUnreachableError",
    "LIBRARY_NAME",
    "MODEL_CARDS_ENV",
    "PIPELINE_TAG",
    "PROCESSOR_NAME",
    "PushedRelease",
    "RELEASE_FILES",
    "TEMPLATE_NAME",
    "VARIANTS_NAME",
    "compute_rows",
    "describe_finetune_base",
    "export_release",
    "find_image_processor",
    "hub_dataset_id",
    "infer_variant",
    "is_hub_id",
    "judgement_results",
    "judgement_text",
    "library_versions",
    "load_image_processor_file",
    "load_results",
    "load_target_encoder",
    "load_variants",
    "local_dataset_name",
    "model_cards_dir",
    "preprocessing_rows",
    "push_release",
    "read_training_records",
    "recipe_rows",
    "release_files",
    "render_model_card",
    "run_rows",
    "save_release",
    "to_eval_result",
    "usage_id",
    "variant_mismatches",
]
