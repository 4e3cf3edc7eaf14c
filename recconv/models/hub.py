"""Share a trained model the Hugging Face way: a folder with ``config.json`` (the preset, its
options and what the model knew about its data) and ``model.safetensors``, written and read by
``huggingface_hub``'s ``PyTorchModelHubMixin`` (``pip install recconv[hub]``).

``model.safetensors`` holds the plain ``state_dict`` of ``create_model(preset, **options)``, the
file :func:`recconv.models.save_checkpoint` writes, so the folder also loads without this class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_checkpoint
from .pretrained import read_model_config
from .registry import create_model


class HubModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="recconv",
    tags=["recconv", "recnext"],
):
    """A model from :func:`~recconv.models.create_model` that ``save_pretrained`` and
    ``push_to_hub`` write as ``config.json`` + ``model.safetensors`` and ``from_pretrained`` rebuilds.

    ``config.json`` holds this constructor's arguments, the content of an example checkpoint's
    ``model_config`` and metadata; loading is strict (every weight must fit the rebuilt model)
    and never runs code from the folder.

    Args:
        preset: A name from :func:`~recconv.models.list_models`.
        options: Keyword arguments of ``create_model`` (numbers, strings, lists and dicts only:
            they are written as JSON).
        classes: Class names, in the order of the logits.
        front_end: Settings of the input transform the model was trained behind.
        data: What the training data were (an example's ``data`` info).
        example: The recconv example that trained the model.

    Attributes:
        model: ``create_model(preset, **options)``, with these arguments as its ``pretrained_cfg``
            (as :func:`~recconv.models.load_model` gives it).

    Raises:
        TypeError: If an argument cannot be written as JSON.
        ValueError: For an unknown preset or options ``create_model`` refuses.

    Example:
        >>> import tempfile, torch
        >>> from recconv.models.hub import HubModel
        >>> shared = HubModel("recnext_seq_tiny", {"num_classes": 2}, classes=["no", "yes"])
        >>> folder = tempfile.mkdtemp()
        >>> shared.save_pretrained(folder)  # model.push_to_hub("user/name") uploads the same folder
        >>> loaded = HubModel.from_pretrained(folder)
        >>> loaded.model.pretrained_cfg["classes"], loaded.training
        (['no', 'yes'], False)
        >>> x = torch.randn(1, 1, 256)
        >>> torch.equal(loaded(x), shared.eval()(x))
        True
    """

    def __init__(
        self,
        preset: str,
        options: dict[str, Any] | None = None,
        *,
        classes: list[str] | None = None,
        front_end: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        example: str | None = None,
    ) -> None:
        super().__init__()
        config: dict[str, Any] = {
            "preset": preset,
            "options": options or {},
            "classes": classes,
            "front_end": front_end or {},
            "data": data or {},
            "example": example,
        }
        for name, value in config.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise TypeError(
                    f"HubModel: {name} goes into config.json and must hold only numbers, strings, lists "
                    f"and dicts, got {value!r}"
                ) from None
        self.model = create_model(preset, **config["options"])
        self.model.pretrained_cfg = config  # type: ignore[assignment]

    def forward(self, x: Tensor) -> Any:
        return self.model(x)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> HubModel:
        """The model a recconv example trained (see :func:`~recconv.models.load_model`), ready to
        ``save_pretrained`` or ``push_to_hub``, in eval mode."""
        hub = cls(**read_model_config(path))
        load_checkpoint(hub.model, path)
        return hub.eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> HubModel:  # type: ignore[override]
        """A model saved with ``save_pretrained`` (a local folder) or ``push_to_hub`` (a Hub repo
        id, downloaded by ``huggingface_hub``), in eval mode; keyword arguments as the mixin's
        (``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``map_location``, and
        ``strict``, which is ``True`` here: ``strict=False`` loads the weights that fit and skips
        the rest, as :func:`~recconv.models.load_checkpoint` does).

        Raises:
            FileNotFoundError: If a local path is no folder, or ``model.safetensors`` is missing.
            ValueError: If the folder's ``config.json`` is missing, not JSON or names no recconv
                preset, or ``model.safetensors`` is damaged or does not fit the model.
        """
        name = str(pretrained_model_name_or_path)
        if not os.path.isdir(name) and (os.path.exists(name) or name.startswith((".", "/", "~"))):
            raise FileNotFoundError(
                f"HubModel.from_pretrained: no folder {name!r}; expected a folder written by "
                "HubModel.save_pretrained or a Hub repo id such as 'user/name'"
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"HubModel.from_pretrained: the {constants.CONFIG_NAME} of {pretrained_model_name_or_path} "
                f"is not valid JSON ({err})"
            ) from None

    def _save_pretrained(self, save_directory: Path) -> None:
        save_checkpoint(self.model, save_directory / constants.SAFETENSORS_SINGLE_FILE)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        proxies: dict[str, str] | None = None,
        resume_download: bool | None = None,
        **model_kwargs: Any,
    ) -> HubModel:
        if not isinstance(config, dict) or not isinstance(config.get("preset"), str):
            found = f"keys {sorted(config)}" if isinstance(config, dict) else "no such file"
            raise ValueError(
                f"HubModel.from_pretrained: {model_id} has no {constants.CONFIG_NAME} naming a recconv "
                f"preset ({found}); expected a folder written by HubModel.save_pretrained"
            )
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, constants.SAFETENSORS_SINGLE_FILE)
        else:
            old_options: dict[str, Any] = {  # huggingface_hub < 1.0 passes these two
                k: v for k, v in (("proxies", proxies), ("resume_download", resume_download)) if v is not None
            }
            weights = hf_hub_download(  # type: ignore[call-overload]  # old_options: untyped on purpose
                repo_id=model_id,
                filename=constants.SAFETENSORS_SINGLE_FILE,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
                **old_options,
            )
        hub = cls(**model_kwargs)
        load_checkpoint(hub.model, weights, strict=strict)
        return hub.to(map_location).eval()
