"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for C-JEPA, through Accelerate's FSDP plugin.

What is sharded: Accelerate's `fsdp2_prepare_model` wraps every `CJEPALayer` (the transformer
block) of the context encoder, the target encoder and the predictor as its own FSDP unit, the
target encoder's patch embedding and final norm as two more (its carve-outs for the input
embeddings and the final norm), and the rest (the context encoder's embedding and final norm,
the predictor's projections, norm and mask token, the VICReg projector) in the root unit.
Every parameter is sharded along dim 0 over the same mesh, whatever unit it is in, so a target
parameter and its context twin hold matching local shards: the EMA step stays a local
`torch._foreach_lerp_` over the shards (`CJEPAForPreTraining.update_target_encoder`), with no
gather. The VICReg statistics and the projector's BatchNorm gather activations, not
parameters, and the reduce-scatter averages gradients like DDP: both stay as under DDP.

`prepare_fsdp` checks and completes the plugin (from `--fsdp` / `fsdp_config` or an accelerate
FSDP config): fsdp_version 2; the wrap over `CJEPALayer` (a wrap that also names
`CJEPAEmbeddings`, the model's default `_no_split_modules`, makes Accelerate shard the patch
embedding twice and fail); SHARDED_STATE_DICT checkpoints (torch.distributed.checkpoint, one
shard per process, resumed sharded); mixed precision bf16 as parameters gathered in bf16 and
gradients reduced in fp32 (`MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`, the
sharded master weights and the EMA stay fp32). Activation checkpointing is the model's own
per-block checkpointing (`--activation_checkpointing`: it keeps the RNG state, so stochastic
depth recomputes the same masks), not the plugin's `checkpoint_wrapper`, which does not.

On the CPU, Accelerate turns an FSDP plugin into FSDP for accelerators only and silently
falls back to DDP (its MULTI_CPU mode); `prepare_fsdp` makes it FSDP there too (gloo runs
FSDP2), so that CPU runs and tests take the same path as GPU runs.

Full weights: `gather_target_encoder` (every process takes part) returns the EMA target
encoder as a plain `CJEPAModel` (the k-NN monitor and the export use it);
`CJEPATrainer.save_model` outside checkpoints gathers the whole model into an ordinary
`model.safetensors`; `consolidate_checkpoint` turns a sharded checkpoint into such a folder in
one process, without a process group, for `cjepa_hf.hub.export_release`.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any

import torch

FSDP_BLOCK = "CJEPALayer"
MODEL_DIR = "pytorch_model_fsdp_0"  # Accelerate's folder names in a SHARDED_STATE_DICT checkpoint
OPTIMIZER_DIR = "optimizer_0"
# The small records a consolidated folder carries beside the weights, for export_release.
_RECORDS = ("config.json", "preprocessor_config.json", "training_args.json", "trainer_state.json")


def _requested_plugin(args: Any):
    """The FSDP plugin the arguments or the launcher ask for, or None."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    if getattr(args, "fsdp_plugin_args", None) is not None:
        return FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return FullyShardedDataParallelPlugin()  # read from the FSDP_* variables accelerate launch sets
    return None


def _force_fsdp_state(accelerator: Any, plugin: Any) -> None:
    """Make Accelerate's state FSDP on the CPU, where it ignores the plugin (both shared
    states: `AcceleratorState` copies `PartialState`'s distributed_type whenever it is
    instantiated)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)


def prepare_fsdp(accelerator: Any, args: Any) -> Any:
    """Check and complete the FSDP plugin for C-JEPA; returns it, or None without FSDP.

    Raises ValueError, naming the setting and what is allowed, for what C-JEPA does not
    support under FSDP: FSDP1, full-state-dict checkpoints, another wrap policy or block class,
    fp16 / fp8, the plugin's activation checkpointing, torch_compile, save_only_model,
    save_on_each_node."""
    from accelerate.utils import DistributedType
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None:
        plugin = _requested_plugin(args)
        if plugin is None:
            return None
        if accelerator.distributed_type != DistributedType.MULTI_CPU:
            raise ValueError(
                f"FSDP was asked for, but Accelerate set up {accelerator.distributed_type}: launch with several "
                "processes (accelerate launch --num_processes N, or torchrun --nproc_per_node N)"
            )
        _force_fsdp_state(accelerator, plugin)
    if plugin.fsdp_version != 2:
        raise ValueError(f"fsdp_version must be 2 (FSDP2, fully_shard) for C-JEPA, got {plugin.fsdp_version!r}")
    fsdp_config = args.fsdp_config if isinstance(getattr(args, "fsdp_config", None), dict) else {}
    if getattr(args, "fsdp", None) and "state_dict_type" not in fsdp_config:
        # transformers' default is FULL_STATE_DICT; its configs (rank 0 only) must go with it
        plugin.state_dict_config = plugin.optim_state_dict_config = None
        plugin.set_state_dict_type("SHARDED_STATE_DICT")
    if plugin.state_dict_type != StateDictType.SHARDED_STATE_DICT:
        raise ValueError(
            f"fsdp state_dict_type must be SHARDED_STATE_DICT (each process saves and resumes its own shards), got "
            f"{plugin.state_dict_type.name}; the full weights come from save_model at the end of training or from "
            "cjepa_hf.training.fsdp.consolidate_checkpoint"
        )
    policy = plugin.auto_wrap_policy
    policy = getattr(policy, "func", policy)
    if policy is None:
        plugin.auto_wrap_policy = transformer_auto_wrap_policy
    elif policy is not transformer_auto_wrap_policy:
        name = "SIZE_BASED_WRAP" if policy is size_based_auto_wrap_policy else getattr(policy, "__name__", repr(policy))
        raise ValueError(f"fsdp auto_wrap_policy must be TRANSFORMER_BASED_WRAP (C-JEPA is sharded per transformer block), got {name}")
    names = plugin.transformer_cls_names_to_wrap
    if names is None:
        plugin.transformer_cls_names_to_wrap = [FSDP_BLOCK]
    elif list(names) != [FSDP_BLOCK]:
        raise ValueError(f"fsdp transformer_layer_cls_to_wrap must be [{FSDP_BLOCK!r}] (the C-JEPA block), got {list(names)!r}")
    if accelerator.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed precision under FSDP must be bf16 or no, got {accelerator.mixed_precision!r}")
    if accelerator.mixed_precision == "bf16":
        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if plugin.activation_checkpointing:
        raise ValueError(
            "fsdp activation_checkpointing is not supported for C-JEPA (its checkpoint_wrapper does not keep the RNG "
            "state, so stochastic depth would recompute other masks); pass --activation_checkpointing true instead "
            "(each CJEPALayer checkpoints itself)"
        )
    if getattr(args, "torch_compile", False):
        raise ValueError("torch_compile is not supported with FSDP here (untested combination); pass --torch_compile false")
    if getattr(args, "save_only_model", False):
        raise ValueError(
            "save_only_model is not supported with FSDP: a sharded checkpoint's model shards are written with the "
            "optimizer's, which save_only_model leaves out; pass --save_only_model false"
        )
    if getattr(args, "save_on_each_node", False):
        raise ValueError(
            "save_on_each_node is not supported with FSDP: every process writes its own shards into one checkpoint, "
            "so output_dir must be a filesystem all nodes share"
        )
    return plugin


def is_fsdp_model(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def gather_target_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The EMA target encoder of an FSDP-sharded `CJEPAForPreTraining` as a plain `CJEPAModel`
    (full tensors, on the parameters' device, eval mode). Every process must call it: each
    parameter is all-gathered. Draws nothing from the RNG (built on the meta device)."""
    from torch.distributed.fsdp import FSDPModule

    from ..modeling_cjepa import CJEPAModel

    for module in model.target_encoder.modules():  # a forward-only unit can be left unsharded
        if isinstance(module, FSDPModule):
            module.reshard()
    state = {name: _full(value).detach().clone() for name, value in model.target_encoder.state_dict().items()}
    with torch.device("meta"):
        encoder = CJEPAModel(model.config)
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.requires_grad_(False).eval()


def read_sharded_model(folder: str) -> dict[str, torch.Tensor]:
    """The full state dict of a `CJEPAForPreTraining` from the `pytorch_model_fsdp_0` folder of a
    sharded checkpoint (a checkpoint folder or that folder itself), in this one process: no
    process group is needed. Tensors on the CPU, in their saved dtypes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = folder if os.path.basename(os.path.normpath(folder)) == MODEL_DIR else os.path.join(folder, MODEL_DIR)
    reader = dcp.FileSystemReader(path)
    metadata = reader.read_metadata()
    prefix = "model."  # Accelerate saves {"model": state_dict}
    state = {
        key[len(prefix) :]: torch.empty(item.size, dtype=item.properties.dtype)
        for key, item in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(item, TensorStorageMetadata)
    }
    if not state:
        raise ValueError(f"{path!r} holds no model tensors (keys: {sorted(metadata.state_dict_metadata)[:5]} ...)")
    wrapped = {"model": state}
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process": yes
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.load(wrapped, storage_reader=reader, no_dist=True)
    return wrapped["model"]


def consolidate_checkpoint(checkpoint_dir: str, output_dir: str) -> str:
    """Write the full `CJEPAForPreTraining` of a sharded FSDP checkpoint as `output_dir/model.safetensors`
    with the checkpoint's config.json, preprocessor_config.json, training_args.json and
    trainer_state.json (the ones it has; the preprocessor also from its run's output folder):
    a folder that `cjepa_hf.hub.export_release`, `CJEPAForPreTraining.from_pretrained` and
    `AutoModel.from_pretrained` (the target encoder) read. One process, no process group.
    Returns output_dir."""
    from safetensors.torch import save_file

    if not os.path.isfile(os.path.join(checkpoint_dir, "config.json")):
        raise FileNotFoundError(f"no config.json in {checkpoint_dir!r} (not a C-JEPA FSDP checkpoint)")
    state = read_sharded_model(checkpoint_dir)
    os.makedirs(output_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
    parent = os.path.dirname(os.path.normpath(checkpoint_dir))
    for name in _RECORDS:
        for source in (os.path.join(checkpoint_dir, name), os.path.join(parent, name)):
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(output_dir, name))
                break
    return output_dir


__all__ = [
    "FSDP_BLOCK",
    "MODEL_DIR",
    "OPTIMIZER_DIR",
    "consolidate_checkpoint",
    "gather_target_encoder",
    "is_fsdp_model",
    "prepare_fsdp",
    "read_sharded_model",
]
