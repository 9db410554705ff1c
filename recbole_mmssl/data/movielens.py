"""MovieLens-100k with real item content, built from the copy inside the installed ``recbole``.

Its licence forbids redistribution, so ``python -m recbole_mmssl.data.prepare ml-100k`` builds
``dataset/ml-100k/`` on the user's machine: all 100,000 ratings as implicit feedback, a seeded
random per-user split by MMRec's rule (:func:`recbole_mmssl.data.folder.split_sizes`), a ``text`` modality (a sentence
encoder over "title (year). genres") and a ``genre`` modality (the 19 genres, multi-hot).
"""

import csv
import os

import numpy as np

from recbole_mmssl.data.encode import encode_texts, load_text_encoder
from recbole_mmssl.data.folder import random_user_split, write_benchmark, write_features, write_token_list
from recbole_mmssl.errors import InputError, MissingInputError

NAME = "ml-100k"
MODALITIES = ("text", "genre")
TEXT_TEMPLATE = "{movie_title} ({release_year}). {class}"


def recbole_copy():
    """The folder of RecBole's bundled MovieLens-100k atomic files."""
    import recbole

    folder = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", NAME)
    if not os.path.isfile(os.path.join(folder, f"{NAME}.inter")):
        raise MissingInputError(f"RecBole's MovieLens-100k copy is not at {folder}; reinstall recbole==1.2.1.")
    return folder


def _read_atomic(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [field.split(":")[0] for field in next(reader)]
        return [dict(zip(header, row)) for row in reader]


def read_movies(folder):
    """(tokens, rows) of ``ml-100k.item``: each row has movie_title, release_year and class."""
    rows = _read_atomic(os.path.join(folder, f"{NAME}.item"))
    return [r["item_id"] for r in rows], rows


def genre_matrix(rows):
    """Multi-hot genres, columns in sorted genre order."""
    genres = sorted({g for r in rows for g in r["class"].split()})
    column = {g: c for c, g in enumerate(genres)}
    matrix = np.zeros((len(rows), len(genres)), dtype=np.float32)
    for r, row in enumerate(rows):
        matrix[r, [column[g] for g in row["class"].split()]] = 1.0
    return matrix, genres


def build(out="dataset", seed=2022, modalities=MODALITIES, encoder_model=None, device=None, progress=True):
    """Write ``<out>/ml-100k/``; returns the folder."""
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown:
        raise InputError(f"--modalities {unknown}: ml-100k offers {list(MODALITIES)}.")
    source = recbole_copy()
    pairs = [(r["user_id"], r["item_id"]) for r in _read_atomic(os.path.join(source, f"{NAME}.inter"))]
    tokens, movies = read_movies(source)
    encoder = load_text_encoder(encoder_model, device) if "text" in modalities else None
    folder = os.path.join(out, NAME)
    write_benchmark(folder, NAME, random_user_split(pairs, seed))
    write_token_list(folder, NAME, tokens)
    if "genre" in modalities:
        write_features(folder, NAME, "genre", genre_matrix(movies)[0])
    if "text" in modalities:
        texts = [TEXT_TEMPLATE.format_map(m) for m in movies]
        write_features(folder, NAME, "text", encode_texts(texts, encoder, progress=progress))
    return folder
