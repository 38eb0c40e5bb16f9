"""Rows through Hugging Face `datasets` (the `data` extra): Parquet files, save_to_disk folders, Hub datasets.

`datasets` is imported here only, and only when one of these sources is read: a missing package is one
ConfigError with the pip command. A Hub dataset is fetched into the Hugging Face cache. Without a network
the load fails at once with one error: under HF_HUB_OFFLINE=1 only the cache is read, and otherwise a
quick request to the Hub (10 s timeout) comes first, so that `datasets`' retries (~30 s) never start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from star.errors import ConfigError, DataError
from star.tasks.tables import Records, must_exist

INSTALL = 'pip install "star-al[data]"'
PROBE_TIMEOUT_S = 10.0


def import_datasets(what: str) -> Any:
    """The `datasets` module, or one ConfigError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{what} needs the Hugging Face `datasets` package, which is not installed", hint=INSTALL) from None
    return datasets


def _reason(e: BaseException) -> str:
    """The innermost message of a library error (datasets wraps the cause in a generic one)."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}"


def table_records(table: Any) -> Records:
    """(1-based row, {column: value}) for every row of a `datasets.Dataset`."""
    return list(enumerate(table.to_list(), start=1))


def read_parquet(path: str) -> Records:
    """Every row of a Parquet file, read by `datasets` (columns keep their types)."""
    must_exist(Path(path))
    datasets = import_datasets(f"reading {path}")
    try:
        table = datasets.load_dataset("parquet", data_files=path, split="train")
    except Exception as e:  # noqa: BLE001 - pyarrow and datasets raise many types; what matters is one message
        raise DataError(f"{path} cannot be read as Parquet: {_reason(e)}",
                        hint="check that it is a whole Parquet file, e.g. written by pandas.DataFrame.to_parquet") from None
    if len(table) == 0:
        raise DataError(f"data file {path} is empty (no rows)", hint="write the rows into it")
    return table_records(table)


def load_saved(folder: str) -> Any:
    """The Dataset or DatasetDict a `save_to_disk` folder holds."""
    datasets = import_datasets(f"reading the saved dataset {folder}")
    try:
        return datasets.load_from_disk(folder)
    except Exception as e:  # noqa: BLE001 - as read_parquet
        raise DataError(f"{folder} cannot be read as a dataset written by save_to_disk: {_reason(e)}",
                        hint="write it again with Dataset.save_to_disk or DatasetDict.save_to_disk") from None


def _offline(name: str, config_name: str | None, why: str) -> DataError:
    """The one error of a Hub dataset that cannot be fetched for lack of a network."""
    args = repr(name) + (f", {config_name!r}" if config_name else "")
    local = name.rstrip("/").split("/")[-1] or "data"
    return DataError(
        f"task.hub={name!r}: this machine seems offline ({why}), and the dataset is not in the Hugging Face cache",
        hint=f"on a machine with a network run  python -c \"import datasets; datasets.load_dataset({args})"
             f".save_to_disk('{local}')\"  then copy the folder {local}/ here and set task.path={local}"
             " (and unset task.hub)",
    )


def _probe(name: str, config_name: str | None) -> None:
    """Ask the Hub about the dataset once, briefly: a missing dataset or no network is one error."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().dataset_info(name, timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise DataError(f"task.hub={name!r}: the Hugging Face Hub has no such dataset (or it is private or gated)",
                        hint="check the name on https://huggingface.co/datasets, or log in (`hf auth login`)") from None
    except HfHubHTTPError:
        return  # the Hub answered; `load_dataset` says what is wrong
    except Exception as e:  # noqa: BLE001 - network errors come from httpx, ssl, socket...: any failure to get an answer
        why = f"the Hub cannot be reached: {type(e).__name__}: {e}; if the dataset is in the cache, set HF_HUB_OFFLINE=1"
        raise _offline(name, config_name, why) from None


def load_hub(name: str, config_name: str | None) -> Any:
    """Every split of a Hub dataset (a DatasetDict), from the cache or downloaded."""
    datasets = import_datasets(f"task.hub={name!r}")
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    if not offline:
        _probe(name, config_name)
    try:
        loaded = datasets.load_dataset(name, config_name)
    except ConnectionError as e:
        why = "HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}: {e}"
        raise _offline(name, config_name, why) from None
    except datasets.exceptions.DatasetNotFoundError as e:
        raise DataError(f"task.hub={name!r}: {e}", hint="check the name on https://huggingface.co/datasets") from None
    except Exception as e:  # noqa: BLE001 - whatever else `datasets` raises, as one error
        subset = f" (task.hub_config={config_name!r})" if config_name else ""
        raise DataError(f"task.hub={name!r}{subset} could not be loaded: {_reason(e)}",
                        hint="check task.hub and task.hub_config against the dataset's page") from None
    if not hasattr(loaded, "keys"):
        return datasets.DatasetDict({"train": loaded})
    return loaded
