"""`essa export ... --push-to-hub REPO`: the exported folder to the Hugging Face Hub.

The repository is created first (private unless asked otherwise; an existing one is reused), then
the folder is uploaded as one commit. The local export is written before and stays whatever
happens; a failure (offline, no token, no permission) is one line naming the cause and the fix.
The token is huggingface_hub's own (HF_TOKEN or `hf auth login`): essa never reads, prints or
stores it.
"""

from __future__ import annotations

from pathlib import Path


def push_to_hub(folder: Path, repo_id: str, private: bool = True, api=None) -> str:
    """Create `repo_id` (exist_ok) and upload `folder` to it; returns the repository URL."""
    check_repo_id(repo_id)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=f"essa export of {Path(folder).name}"
        )
    except Exception as exc:
        raise RuntimeError(
            f"push to {repo_id} failed ({type(exc).__name__}: {_first_line(exc)}). The adapter is saved at {folder}; "
            "check the network and that a token with write access is set (HF_TOKEN, or `hf auth login`), then "
            f"push again with: essa export RUN_DIR --out {folder} --push-to-hub {repo_id}"
        ) from exc
    return str(url)


def check_repo_id(repo_id: str) -> None:
    """USER_OR_ORG/NAME, by the Hub's own rules (huggingface_hub's validate_repo_id: characters, length, '--')."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("one / between owner and name")
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(
            f"--push-to-hub {repo_id!r}: name the repository as USER_OR_ORG/NAME, with letters, digits, "
            f"'-', '_' and '.' (the Hub says: {str(exc).splitlines()[0]})"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
