"""The upload of a release folder to the Hugging Face Hub (`push_release`), and the one
error a push without network ends in (`HubUnreachableError`)."""

from __future__ import annotations

import dataclasses
import os

from huggingface_hub import HfApi

from .release import release_files


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached (offline mode, no connection, a timeout) while pushing."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def _is_unreachable(error: BaseException) -> bool:
    """Offline mode (`OfflineModeIsEnabled` is a ConnectionError), a refused or failed
    connection, a DNS failure or a timeout, from any HTTP client huggingface_hub may use."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    network = {
        "TransportError",
        "NetworkError",
        "ConnectError",
        "ConnectTimeout",
        "TimeoutException",
        "ConnectionError",
        "Timeout",
        "NewConnectionError",
        "MaxRetryError",
    }
    return any(
        cls.__name__ in network and cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
        for cls in type(error).__mro__
    )


@dataclasses.dataclass
class PushedRelease:
    """What `push_release` sent: the repo, the commit, and the exact list of files."""

    repo_id: str
    repo_url: str
    commit_url: str | None
    files: list[str]


def push_release(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload C-JEPA release (target encoder, remote code, model card)",
    revision: str | None = None,
    api: HfApi | None = None,
) -> PushedRelease:
    """Create `repo_id` if needed (`HfApi.create_repo(exist_ok=True)`) and upload the
    release folder with `HfApi.upload_folder`, restricted to the release files (no stray
    file goes up). The token defaults to huggingface_hub's (HF_TOKEN or `hf auth login`)."""
    files = release_files(folder)
    api = api if api is not None else HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=getattr(repo_url, "repo_id", None) or repo_id,
            folder_path=os.fspath(folder),
            commit_message=commit_message,
            token=token,
            repo_type="model",
            revision=revision,
            allow_patterns=files,
        )
    except Exception as error:  # noqa: BLE001 - only network failures are translated; the rest re-raise
        if not _is_unreachable(error):
            raise
        raise HubUnreachableError(
            f"cannot push to {repo_id!r}: the Hugging Face Hub cannot be reached ({_one_line(error)}); "
            f"the release folder {os.fspath(folder)!r} is complete, push it again when online"
        ) from error
    return PushedRelease(
        repo_id=getattr(repo_url, "repo_id", None) or repo_id,
        repo_url=str(repo_url),
        commit_url=getattr(commit, "commit_url", None),
        files=files,
    )


__all__ = ["HubUnreachableError", "PushedRelease", "push_release"]
