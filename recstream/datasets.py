"""Where the MovieLens ml-latest-small files come from: a folder the user names, the shared
copy beside the project, or GroupLens's official zip (checked by sha256). Never committed."""

from __future__ import annotations

import hashlib
import io
import urllib.request
import zipfile
from pathlib import Path

from recstream.core.errors import RecstreamError

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
# sha256 of the files of the 2018-09-26 release (the copy in ../shared/datasets/movielens-small).
MOVIELENS_SHA256 = {
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
}
SHARED_COPY = Path("../shared/datasets/movielens-small")


def movielens_dir(explicit: Path | None, cache_dir: Path) -> Path:
    """The folder holding movies.csv, ratings.csv and tags.csv: explicit, else the shared copy,
    else the download cached under cache_dir (fetched once, verified every time)."""
    if explicit is not None:
        if not (explicit / "ratings.csv").exists():
            raise RecstreamError(f"RECSTREAM_DATASET_DIR={explicit} has no ratings.csv")
        return explicit
    if (SHARED_COPY / "ratings.csv").exists():
        return SHARED_COPY
    target = cache_dir / "ml-latest-small"
    if not all((target / name).exists() for name in MOVIELENS_SHA256):
        _download(target)
    _verify(target)
    return target


def _download(target: Path) -> None:
    print(f"downloading {MOVIELENS_URL} ...")
    try:
        with urllib.request.urlopen(MOVIELENS_URL, timeout=60) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
    except OSError as error:
        raise RecstreamError(
            f"cannot download MovieLens ({error}); set RECSTREAM_DATASET_DIR to a folder with "
            "movies.csv, ratings.csv and tags.csv"
        ) from error
    target.mkdir(parents=True, exist_ok=True)
    for name in MOVIELENS_SHA256:
        (target / name).write_bytes(archive.read(f"ml-latest-small/{name}"))


def _verify(
    folder: Path,
    checksums: dict[str, str] = MOVIELENS_SHA256,
    hint: str = "(GroupLens calls ml-latest-small a development dataset that may change); "
    "set RECSTREAM_DATASET_DIR",
) -> None:
    for name, expected in checksums.items():
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != expected:
            raise RecstreamError(
                f"{folder / name}: sha256 {actual} is not the expected {expected} {hint}"
            )


RESTAURANT_SHARED_COPY = Path("../shared/datasets/restaurant-consumer")
RESTAURANT_SOURCE = "https://archive.ics.uci.edu/dataset/232/restaurant+consumer+data"
# sha256 of the UCI "RCdata" files the restaurant evaluation reads.
RESTAURANT_SHA256 = {
    "rating_final.csv": "fc994ea4e872365fc63e7f0bc970b36f86edeb4e80218d6a674a3d0e51181901",
    "geoplaces2.csv": "4eff7a908fd21a95a6058fbecf6143ebda31bec1ff5b726d9a23a486d6eaac5c",
    "chefmozcuisine.csv": "70fb1c59250039f00792b49d1c38e64c424935288f10564c463797dc828d533a",
}


def restaurant_dir(explicit: Path | None) -> Path:
    """The folder holding the restaurant-consumer CSVs: explicit, else the shared copy. No
    download: UCI serves it behind a web page, so a missing folder is an error saying where."""
    folder = explicit or RESTAURANT_SHARED_COPY
    if not (folder / "rating_final.csv").exists():
        raise RecstreamError(
            f"no restaurant dataset at {folder}: download RCdata from {RESTAURANT_SOURCE} and "
            "pass its folder with --data-dir"
        )
    _verify(folder, RESTAURANT_SHA256, f"(the UCI release: {RESTAURANT_SOURCE})")
    return folder
