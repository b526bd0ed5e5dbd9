"""C-JEPA models: the encoder, the predictor, the VICReg projector, the pretraining model
and the classifier: I-JEPA (Assran et al., CVPR 2023) with C-JEPA's VICReg regulariser
(Mo & Tong, NeurIPS 2024).

Shapes: B batch, N patches, K kept (context) patches, M target blocks, T patches
per target block, D encoder width, P predictor width, H heads.

Remote code: this file imports from the package only the other files of
`REMOTE_CODE_FILES`, which `save_pretrained` copies into every saved folder, so that
folder loads with `trust_remote_code=True` where `cjepa_hf` is not installed.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import ModelOutput

from .configuration_cjepa import CJEPAConfig
from .layers_cjepa import CJEPAEmbeddings, CJEPALayer, drop_path_rates, gather_tokens, sincos_2d
from .losses import at_least_fp32, gather_with_grad, jepa_loss, variance_covariance_loss, vicreg_block_loss, vicreg_context_loss
from .processing_cjepa import build_image_processor, normalize_pixels

# The files a saved folder needs for `trust_remote_code=True` loading (this file and every
# package file it imports, directly or not), and the Auto map.
REMOTE_CODE_FILES = (
    "configuration_cjepa.py",
    "layers_cjepa.py",
    "losses.py",
    "modeling_cjepa.py",
    "processing_cjepa.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration_cjepa.CJEPAConfig",
    "AutoModel": "modeling_cjepa.CJEPAModel",
    "AutoModelForImageClassification": "modeling_cjepa.CJEPAForImageClassification",
    "AutoModelForPreTraining": "modeling_cjepa.CJEPAForPreTraining",
}


# ============================================================================ base class


class CJEPAPreTrainedModel(PreTrainedModel):
    config_class = CJEPAConfig
    config: CJEPAConfig
    base_model_prefix = "target_encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["CJEPAEmbeddings", "CJEPALayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # forward() takes no **kwargs: Trainer must divide the loss for gradient accumulation itself.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """I-JEPA initialisation: truncated normal (std initializer_range) for linear and
        conv weights, zero biases, unit LayerNorm, residual projections of block l scaled
        by 1/sqrt(2 l); sin-cos position buffers recomputed."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm1d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, CJEPALayer):
            scale = 1.0 / math.sqrt(2.0 * module.layer_id)
            init.copy_(module.attention.proj.weight, module.attention.proj.weight * scale)
            init.copy_(module.mlp.fc2.weight, module.mlp.fc2.weight * scale)
        elif isinstance(module, CJEPAEmbeddings):
            init.copy_(module.position_embeddings, sincos_2d(self.config.hidden_size, self.config.grid_size))
        elif isinstance(module, CJEPAPredictor):
            init.copy_(module.position_embeddings, sincos_2d(self.config.predictor_hidden_size, self.config.grid_size))
            init.trunc_normal_(module.mask_token, mean=0.0, std=std)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Save as transformers does, plus what loading needs elsewhere: the Auto map and
        source files for `trust_remote_code=True`, and a `preprocessor_config.json`
        (resize + center crop + ImageNet mean/std, the training normalisation)."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        is_main = kwargs.get("is_main_process", True)
        if not is_main:
            return
        here = os.path.dirname(os.path.abspath(__file__))
        for name in REMOTE_CODE_FILES:
            shutil.copyfile(os.path.join(here, name), os.path.join(save_directory, name))
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            build_image_processor(self.config).save_pretrained(save_directory)


# ============================================================================ encoder


class CJEPAModel(CJEPAPreTrainedModel):
    """The ViT encoder (no CLS token). `pooler_output` is the mean over patch tokens.

    Loaded from a `CJEPAForPreTraining` checkpoint it is the EMA target encoder, the
    encoder I-JEPA (Assran et al., CVPR 2023) evaluates."""

    _keys_to_ignore_on_load_unexpected = [r"^context_encoder\.", r"^predictor\.", r"^projector\."]

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__(config)
        self.embeddings = CJEPAEmbeddings(config)
        rates = drop_path_rates(config.drop_path_rate, config.num_hidden_layers)
        self.layers = nn.ModuleList(
            CJEPALayer(config, config.hidden_size, config.num_attention_heads, config.intermediate_size, rates[i], i + 1)
            for i in range(config.num_hidden_layers)
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        keep_indices: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        pixel_values: (B, C, H, W), normalised floats, or uint8 0..255 pixels, which are
            normalised here with the image processor's ImageNet mean/std (`normalize_pixels`).
            Sizes other than the config's use interpolated positions.
        keep_indices: (B, K) long, optional. Row-major patch indices to keep: the other
            tokens are dropped before the first block (I-JEPA's context encoder).
        Returns last_hidden_state (B, N or K, D), pooler_output (B, D) = mean over tokens,
        hidden_states (embeddings + each block, before the final norm) and attentions when asked.
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        if pixel_values.dtype == torch.uint8:
            pixel_values = normalize_pixels(pixel_values)
        hidden_states = self.embeddings(pixel_values)  # (B, N, D)
        if keep_indices is not None:
            if keep_indices.dim() != 2 or keep_indices.shape[0] != hidden_states.shape[0]:
                raise ValueError(f"keep_indices must have shape (batch, kept), got {tuple(keep_indices.shape)}")
            hidden_states = gather_tokens(hidden_states, keep_indices)  # (B, K, D)
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        sequence_output = self.layernorm(hidden_states)
        pooled = sequence_output.mean(dim=1)
        if not return_dict:
            return tuple(v for v in (sequence_output, pooled, all_hidden, all_attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )


# ============================================================================ predictor


class CJEPAPredictor(nn.Module):
    """Narrow ViT that predicts target-block features from the context tokens.

    Context tokens are projected D -> P and given the predictor's own sin-cos
    positions; every target block becomes its own sequence [context, mask tokens at
    the block's positions], all B*M sequences run in one batched call, and the
    outputs at the mask tokens are normed and projected P -> D."""

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__()
        self.config = config
        width = config.predictor_hidden_size
        self.predictor_embed = nn.Linear(config.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("position_embeddings", sincos_2d(width, config.grid_size), persistent=True)
        rates = drop_path_rates(config.drop_path_rate, config.predictor_num_hidden_layers)
        self.layers = nn.ModuleList(
            CJEPALayer(config, width, config.predictor_num_attention_heads, config.predictor_intermediate_size, rates[i], i + 1)
            for i in range(config.predictor_num_hidden_layers)
        )
        self.layernorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.predictor_proj = nn.Linear(width, config.hidden_size)

    def forward(self, context_tokens: torch.Tensor, context_indices: torch.Tensor, target_indices: torch.Tensor) -> torch.Tensor:
        """context_tokens (B, K, D), context_indices (B, K), target_indices (B, M, T) -> (B, M, T, D)."""
        batch, kept, _ = context_tokens.shape
        if context_indices.shape != (batch, kept):
            raise ValueError(
                f"context_indices must have shape {(batch, kept)} to match the context tokens, got {tuple(context_indices.shape)}"
            )
        if target_indices.dim() != 3 or target_indices.shape[0] != batch:
            raise ValueError(f"target_indices must have shape (batch, blocks, patches), got {tuple(target_indices.shape)}")
        num_blocks, per_block = target_indices.shape[1:]
        positions = self.position_embeddings[0]  # (N, P)

        context = self.predictor_embed(context_tokens) + positions[context_indices].to(context_tokens.dtype)  # (B, K, P)
        context = context.unsqueeze(1).expand(-1, num_blocks, -1, -1)  # (B, M, K, P)
        queries = self.mask_token.to(context.dtype) + positions[target_indices].to(context.dtype)  # (B, M, T, P)
        hidden_states = torch.cat([context, queries], dim=2).flatten(0, 1)  # (B*M, K+T, P)
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states)
        hidden_states = self.layernorm(hidden_states[:, kept:])  # (B*M, T, P)
        return self.predictor_proj(hidden_states).view(batch, num_blocks, per_block, -1)


# ============================================================================ VICReg projector


class CJEPABatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics can come from the batch gathered from all
    processes (a SyncBatchNorm that also works on the CPU / gloo, gradients included)."""

    def forward(self, x: torch.Tensor, gather_distributed: bool = False) -> torch.Tensor:
        if not (self.training and gather_distributed):
            return super().forward(x)
        full = at_least_fp32(gather_with_grad(x))  # bf16 activations (FSDP mixed precision): fp32 statistics
        mean = full.mean(dim=0)
        var = full.var(dim=0, unbiased=False)
        with torch.no_grad():
            n = full.shape[0]
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_((var.detach() * n / max(n - 1, 1)).to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        return ((x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias).to(x.dtype)


class CJEPAProjector(nn.Module):
    """VICReg expander: (Linear, BatchNorm1d, ReLU) for each hidden size, then a final
    Linear without bias (official VICReg layout). (N, D) -> (N, projector_dims[-1])."""

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__()
        sizes = [config.hidden_size, *config.projector_dims]
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            self.linears.append(nn.Linear(sizes[i], sizes[i + 1], bias=not last))
            if not last:
                self.norms.append(CJEPABatchNorm1d(sizes[i + 1]))

    def forward(self, x: torch.Tensor, gather_distributed: bool = False) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = F.relu(norm(linear(x), gather_distributed))
        return self.linears[-1](x)


# ============================================================================ pretraining


@dataclass
class CJEPAPreTrainingOutput(ModelOutput):
    r"""
    loss: total, jepa_loss + vicreg_weight * vicreg_loss.
    jepa_loss: regression of the predictions onto the layer-normed target features.
    vicreg_loss: sim * invariance + std * variance + cov * covariance (None when vicreg_weight == 0).
    vicreg_invariance, vicreg_variance, vicreg_covariance: the unweighted VICReg terms.
    encoder_vicreg_loss, encoder_variance, encoder_covariance: the encoder regulariser
        (std * var + cov * cov of the context encoder's output) and its unweighted terms
        (None when encoder_vicreg_weight == 0).
    predictions: (B, M, T, D) predictor outputs at the target patches.
    target_pooled_output: (B, D) mean-pooled target-encoder features of the full images
        (what users get from `AutoModel`), for collapse monitoring.
    """

    loss: torch.Tensor | None = None
    jepa_loss: torch.Tensor | None = None
    vicreg_loss: torch.Tensor | None = None
    vicreg_invariance: torch.Tensor | None = None
    vicreg_variance: torch.Tensor | None = None
    vicreg_covariance: torch.Tensor | None = None
    encoder_vicreg_loss: torch.Tensor | None = None
    encoder_variance: torch.Tensor | None = None
    encoder_covariance: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    target_pooled_output: torch.Tensor | None = None


class CJEPAForPreTraining(CJEPAPreTrainedModel):
    """Context encoder, EMA target encoder, predictor and (when vicreg_weight > 0) the
    VICReg projector. The target encoder is a real copy, frozen, never in the optimizer;
    `update_target_encoder(momentum)` does the EMA step."""

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__(config)
        self.context_encoder = CJEPAModel(config)
        self.target_encoder = CJEPAModel(config)
        self.predictor = CJEPAPredictor(config)
        # post_init re-initialises every module, the projector last; its construction-time
        # draws are discarded, so they are taken from a forked RNG: the encoder and predictor
        # a seed gives do not depend on whether the model has a projector (I-JEPA vs C-JEPA).
        with torch.random.fork_rng(devices=[]):
            self.projector = CJEPAProjector(config) if config.vicreg_weight > 0 else None
        self.post_init()
        self.target_encoder.load_state_dict(self.context_encoder.state_dict())
        self.freeze_target_encoder()

    # -- the target encoder stays frozen and in eval mode -------------------------------
    def freeze_target_encoder(self) -> None:
        self.target_encoder.requires_grad_(False)
        self.target_encoder.eval()

    def train(self, mode: bool = True) -> CJEPAForPreTraining:
        super().train(mode)
        self.target_encoder.eval()
        return self

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> CJEPAForPreTraining:
        model = super().from_pretrained(*args, **kwargs)
        model.freeze_target_encoder()  # loading re-creates parameters with requires_grad=True
        return model

    @torch.no_grad()
    def update_target_encoder(self, momentum: float | torch.Tensor) -> None:
        """target = momentum * target + (1 - momentum) * context, fused over all parameters.

        `momentum` may be a 0-dim tensor on the parameters' device (the trainer passes 1.0 to
        skip a step after a non-finite loss without a host sync). Under FSDP2 (`fully_shard`)
        the lerp runs on the local shards of both encoders, which must be sharded alike: no gather."""
        if not isinstance(momentum, torch.Tensor) and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
        target, context = _local_pairs(self.target_encoder, self.context_encoder)
        weight = 1.0 - momentum
        if isinstance(weight, torch.Tensor):  # the tensor-list overload: the scalar one would read it on the host
            torch._foreach_lerp_(target, context, [weight] * len(target))
        else:
            torch._foreach_lerp_(target, context, weight)

    def forward(
        self,
        pixel_values: torch.Tensor,
        context_indices: torch.Tensor,
        target_indices: torch.Tensor,
        gather_distributed: bool = False,
        return_dict: bool | None = None,
    ) -> CJEPAPreTrainingOutput | tuple:
        r"""
        pixel_values: (B, C, H, W), normalised floats or uint8 pixels (normalised once here, on
            their device, with `normalize_pixels`, for both encoders). context_indices: (B, K) long.
            target_indices: (B, M, T) long.
        gather_distributed: compute the VICReg variance/covariance (and the projector's
            BatchNorm statistics) on the batch gathered from all processes.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        if target_indices.dim() != 3:
            raise ValueError(f"target_indices must have shape (batch, blocks, patches), got {tuple(target_indices.shape)}")
        if pixel_values.dtype == torch.uint8:
            pixel_values = normalize_pixels(pixel_values)

        with torch.no_grad():
            target_hidden = self.target_encoder(pixel_values).last_hidden_state  # (B, N, D)
            target_pooled = target_hidden.mean(dim=1)
            target_hidden = F.layer_norm(target_hidden, target_hidden.shape[-1:])
            targets = gather_tokens(target_hidden, target_indices)  # (B, M, T, D)

        context = self.context_encoder(pixel_values, keep_indices=context_indices).last_hidden_state  # (B, K, D)
        predictions = self.predictor(context, context_indices, target_indices)  # (B, M, T, D)
        jepa = jepa_loss(predictions, targets, config.jepa_loss, config.smooth_l1_beta)

        loss, vicreg = jepa, None
        if self.projector is not None:
            coeffs = dict(
                sim_coeff=config.vicreg_sim_coeff,
                std_coeff=config.vicreg_std_coeff,
                cov_coeff=config.vicreg_cov_coeff,
                eps=config.vicreg_eps,
                gather_distributed=gather_distributed,
            )
            if config.vicreg_source == "predictor":
                block_means = predictions.mean(dim=2)  # (B, M, D)
                z = self.projector(block_means.flatten(0, 1), gather_distributed).view(*block_means.shape[:2], -1)
                vicreg = vicreg_block_loss(at_least_fp32(z), **coeffs)
            else:  # "context": the context view against each target block's mean target feature
                batch, blocks = target_indices.shape[:2]
                views = torch.cat([context.mean(dim=1, keepdim=True), targets.mean(dim=2).to(context.dtype)], dim=1)
                z = at_least_fp32(self.projector(views.flatten(0, 1), gather_distributed).view(batch, blocks + 1, -1))
                vicreg = vicreg_context_loss(z[:, 0], z[:, 1:], **coeffs)
            loss = jepa + config.vicreg_weight * vicreg["loss"]

        encoder_reg = None
        if config.encoder_vicreg_weight > 0:
            encoder_reg = self._encoder_regulariser(context, gather_distributed)
            loss = loss + config.encoder_vicreg_weight * encoder_reg["loss"]

        output = CJEPAPreTrainingOutput(
            loss=loss,
            jepa_loss=jepa,
            vicreg_loss=vicreg["loss"] if vicreg else None,
            vicreg_invariance=vicreg["invariance"] if vicreg else None,
            vicreg_variance=vicreg["variance"] if vicreg else None,
            vicreg_covariance=vicreg["covariance"] if vicreg else None,
            encoder_vicreg_loss=encoder_reg["loss"] if encoder_reg else None,
            encoder_variance=encoder_reg["variance"] if encoder_reg else None,
            encoder_covariance=encoder_reg["covariance"] if encoder_reg else None,
            predictions=predictions,
            target_pooled_output=target_pooled,
        )
        return output if return_dict else output.to_tuple()

    def _encoder_regulariser(self, context: torch.Tensor, gather_distributed: bool) -> dict[str, torch.Tensor]:
        """Variance + covariance of the context encoder's output (B, K, D): of its mean over
        the tokens, of the tokens themselves, or the sum of both (`encoder_vicreg_features`)."""
        config = self.config
        coeffs = dict(
            std_coeff=config.vicreg_std_coeff,
            cov_coeff=config.vicreg_cov_coeff,
            eps=config.vicreg_eps,
            gather_distributed=gather_distributed,
        )
        parts = []
        if config.encoder_vicreg_features in ("pooled", "both"):
            parts.append(variance_covariance_loss(context.mean(dim=1), **coeffs))
        if config.encoder_vicreg_features in ("tokens", "both"):
            parts.append(variance_covariance_loss(context.flatten(0, 1), **coeffs))
        return {key: sum(part[key] for part in parts) for key in parts[0]}


def _local_pairs(target: nn.Module, context: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The parameters of two identically built modules, paired in order; under FSDP2 their local
    shards, after putting every FSDP unit back in its sharded state (a forward-only unit of the
    target encoder can stay unsharded after its forward, and its unsharded copy is discarded at
    the next reshard). Raises ValueError when twins are not sharded alike."""
    try:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without FSDP2: plain tensors only
        return list(target.parameters()), list(context.parameters())
    for module in (*target.modules(), *context.modules()):
        if isinstance(module, FSDPModule):
            module.reshard()
    targets, contexts = [], []
    for (name, t), c in zip(target.named_parameters(), context.parameters()):
        if isinstance(t, DTensor) or isinstance(c, DTensor):
            alike = isinstance(t, DTensor) and isinstance(c, DTensor) and (t.device_mesh, t.placements) == (c.device_mesh, c.placements)
            if not alike:
                where = [(x.device_mesh, x.placements) if isinstance(x, DTensor) else "not sharded" for x in (t, c)]
                raise ValueError(f"{name} of the target and the context encoder are not sharded alike ({where[0]} vs {where[1]})")
            t, c = t.to_local(), c.to_local()
        targets.append(t)
        contexts.append(c)
    return targets, contexts


# ============================================================================ classification


class CJEPAForImageClassification(CJEPAPreTrainedModel):
    """Mean-pooled encoder features and a linear head. Loaded from a pretraining
    checkpoint, the backbone starts from the target encoder."""

    _keys_to_ignore_on_load_unexpected = [r"^context_encoder\.", r"^predictor\.", r"^projector\."]

    def __init__(self, config: CJEPAConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.target_encoder = CJEPAModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        r"""pixel_values (B, C, H, W); labels (B,) class ids (or (B, L) floats for
        multi-label / regression, following `config.problem_type`). Returns logits (B, L)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.target_encoder(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self._classification_loss(logits, labels.to(logits.device))
        if not return_dict:
            out = (logits, outputs.hidden_states, outputs.attentions)
            return ((loss,) + out) if loss is not None else out
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def _classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
            self.config.problem_type = problem_type
        if problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.float().squeeze(-1))
        if problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.float())


__all__ = [
    "CJEPAForImageClassification",
    "CJEPAForPreTraining",
    "CJEPAModel",
    "CJEPAPreTrainedModel",
    "CJEPAPreTrainingOutput",
    "CJEPAPredictor",
    "CJEPAProjector",
    "build_image_processor",
    "gather_tokens",
    "sincos_2d",
]
