"""Text and image features for amazon-baby and amazon-sports, from the files of the Amazon product data (2014).

    python -m recbole_mmssl.data.prepare amazon --dataset amazon-baby \\
        --meta meta_Baby.json.gz --image-features image_features_Baby.b
    python -m recbole_mmssl.data.prepare amazon --dataset amazon-sports \\
        --reviews reviews_Sports_and_Outdoors_5.json.gz \\
        --meta meta_Sports_and_Outdoors.json.gz --image-features image_features_Sports_and_Outdoors.b

Julian McAuley's UCSD page (http://jmcauley.ucsd.edu/data/amazon/links.html, "Per-category files")
publishes, per category, the product metadata (one Python dict literal per line, gzipped) and
4096-d CNN image features (records of a 10-byte ASIN and 4,096 little-endian float32). Rows
are matched to the prepared folder's item tokens through the ASIN column of
``<name>.item_map.tsv`` and follow its token list ``<name>.feature_items``.

How MMRec builds its features, read in enoche/MMRec at commit 20a45f502dc28c0805d510b708b26f0d07457457,
``preprocessing/2reindex-feat.ipynb`` and ``preprocessing/3feat-encoder.ipynb`` (the Sports notebook;
its README applies the same steps to every category), reproduced here:

* The metadata lines are parsed as Python literals, the 5-core's products kept, and saved to a CSV
  that the encoder step reads back with pandas (1.3.5, pinned in MMRec's requirements).
* An item's sentence is title, brand, the categories of its first category path, and the description,
  in that order: title, a space, brand, a space, each category followed by a space, then the
  description; afterwards every newline of the sentence becomes a space.
* A missing title, brand or description is filled with one space. Because of the CSV round trip,
  an empty value, and a value that pandas 1.x reads as missing (such as ``NA``, ``N/A`` or
  ``null``), is filled the same way (:data:`PANDAS_MISSING`). Only ``categories[0]`` is used.
  Missing or empty categories add nothing here (MMRec's code would stop on them; its data had
  none), and a flat list of categories is taken as one path.
* The sentences are encoded by sentence-transformers' all-MiniLM-L6-v2 (384-d, default settings).
* Image rows are the binary's vectors for the dataset's ASINs; an item without one gets the mean of
  those found, computed in float64 over every matching record (a repeated record: the last one is
  the row, and each counts in the mean).

MMRec has no rule for an item without metadata (each of its items had some); here it gets the mean
text row, as in :func:`recbole_mmssl.data.encode.aligned_rows`. Items are keyed by ASIN here, not by
MMRec's re-indexing, so the rows are the same whatever the dataset's item ids.

amazon-sports has no bundled map. ``--reviews`` builds one the way Baby's was derived: the
ASIN-keyed interactions (the 5-core reviews file, or the ratings-only CSV cut to its 5-core as MMRec
does) are matched to the folder's interaction graph by colour refinement (1-dimensional
Weisfeiler-Leman), refusing graphs that differ and items that the graph cannot tell apart.
"""

import ast
import csv
import gzip
import json
import os
import sys
import zlib
from collections import Counter, defaultdict

import numpy as np

from recbole_mmssl.common.files import write_text
from recbole_mmssl.data.encode import aligned_rows, dataset_paths, encode_texts, load_text_encoder
from recbole_mmssl.data.features import read_item_tokens
from recbole_mmssl.data.folder import PHASES, feature_path, inter_path, item_map_path, write_features
from recbole_mmssl.errors import InputError, MissingInputError

ASIN_BYTES, IMAGE_DIM = 10, 4096
IMAGE_RECORD = np.dtype([("asin", f"S{ASIN_BYTES}"), ("features", "<f4", (IMAGE_DIM,))])
RECORDS_PER_READ = 256
GZIP_MAGIC = b"\x1f\x8b"
MODALITIES = ("text", "image")
K_CORE = 5
MAP_COLUMNS = ("item_id", "asin", "mmrec_itemID")
META_FILE = "the published meta_<Category>.json.gz (one Python dict literal with an 'asin' per line)"
IMAGE_FILE = (f"the published image_features_<Category>.b (records of a {ASIN_BYTES}-byte ASIN and "
              f"{IMAGE_DIM} float32)")
REVIEWS_FILE = ("the published reviews_<Category>_5.json.gz (one review with 'reviewerID' and 'asin' per line) "
                "or ratings_<Category>.csv (user,asin,rating,timestamp)")
# pandas 1.x's default missing-value strings of read_csv (2.0 added 'None')
PANDAS_MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                            "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})


def _progress(iterable=None, progress=True, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, disable=not progress, **kwargs)


def _require_file(path, what):
    if not os.path.isfile(path):
        raise MissingInputError(f"{path} not found; expected {what}.")


def _check_gzip(path, what):
    _require_file(path, what)
    with open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            raise InputError(f"{path} is not a gzip file; expected {what}.")


def _gzip_lines(path, what, progress=False):
    """(line number, text) of each non-blank line of a gzip file of UTF-8 lines."""
    _check_gzip(path, what)
    try:
        with gzip.open(path, "rb") as f:
            for number, raw in enumerate(_progress(f, progress, desc=os.path.basename(path), unit=" lines"), 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{path} line {number} is not UTF-8 text; expected {what}.") from None
                if text.strip():
                    yield number, text
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path} is not a complete gzip file ({err}); expected {what}.") from None


def _dict_line(text, path, number, what, json_first=False):
    """One line's dict: a Python dict literal (never evaluated as code), or JSON first when asked."""
    value = None
    if json_first:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            pass
    if value is None:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    if not isinstance(value, dict):
        raise InputError(f"{path} line {number} is not a dict literal ({text.strip()[:60]!r}); expected {what}.")
    return value


def mmrec_sentence(product):
    """The text MMRec encodes for one metadata dict: title, brand, first category path, description."""
    def field(key):
        value = product.get(key)
        value = "" if value is None else value if isinstance(value, str) else str(value)
        return " " if value in PANDAS_MISSING else value

    categories = product.get("categories")
    path = []
    if isinstance(categories, list) and categories:
        path = categories[0] if isinstance(categories[0], list) else categories
    sentence = field("title") + " " + field("brand") + " " + "".join(f"{c} " for c in path) + field("description")
    return sentence.replace("\n", " ")


def read_metadata(path, wanted, progress=True):
    """ASIN -> sentence for the products of ``wanted`` (a set of ASINs) in a metadata file."""
    sentences, line_of = {}, {}
    for number, text in _gzip_lines(path, META_FILE, progress):
        product = _dict_line(text, path, number, META_FILE)
        asin = product.get("asin")
        if not isinstance(asin, str):
            raise InputError(f"{path} line {number} has no 'asin' string; expected {META_FILE}.")
        if asin not in wanted:
            continue
        if asin in line_of:
            raise InputError(f"{path} line {number}: product {asin} already appeared on line {line_of[asin]}.")
        line_of[asin] = number
        sentences[asin] = mmrec_sentence(product)
    if not sentences:
        raise InputError(f"None of the dataset's {len(wanted)} ASINs is in {path}; expected the metadata "
                         "of the same category (e.g. meta_Baby.json.gz for amazon-baby).")
    return sentences


def _check_image_file(path):
    _require_file(path, IMAGE_FILE)
    size = os.path.getsize(path)
    if size % IMAGE_RECORD.itemsize:
        raise InputError(f"{path} has {size} bytes, not a multiple of the record size {IMAGE_RECORD.itemsize} "
                         f"({ASIN_BYTES} + 4 x {IMAGE_DIM}); expected {IMAGE_FILE}.")
    return size // IMAGE_RECORD.itemsize


def read_image_features(path, wanted, progress=True):
    """(ASIN -> float32 row, float64 mean row, records used) for the ASINs of ``wanted`` in an image file."""
    n_records = _check_image_file(path)
    key_of = {a.encode("ascii"): a for a in wanted if a.isascii() and 0 < len(a) <= ASIN_BYTES}
    keys = np.array(sorted(key_of), dtype=IMAGE_RECORD["asin"])
    rows, total, used = {}, np.zeros(IMAGE_DIM), 0
    with open(path, "rb") as f, _progress(None, progress, total=n_records, desc=os.path.basename(path),
                                          unit=" records") as bar:
        for start in range(0, n_records, RECORDS_PER_READ):
            records = np.frombuffer(f.read(RECORDS_PER_READ * IMAGE_RECORD.itemsize), dtype=IMAGE_RECORD)
            for k in np.flatnonzero(np.isin(records["asin"], keys)):
                asin, vector = key_of[records["asin"][k]], records["features"][k]
                if not np.isfinite(vector).all():
                    raise InputError(f"{path} record {start + k + 1} (ASIN {asin}) holds values that are not "
                                     "finite numbers; the file is damaged.")
                rows[asin] = vector.astype(np.float32)
                total += vector
                used += 1
            bar.update(len(records))
    if not rows:
        raise InputError(f"None of the dataset's {len(wanted)} ASINs is in {path}; expected the image "
                         "features of the same category (e.g. image_features_Baby.b for amazon-baby).")
    return rows, total / used, used


def read_item_map(path, tokens):
    """Item token -> ASIN from the folder's item map, for every token of the token list."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        if len(columns) < 2 or "asin" not in columns[1:]:
            raise InputError(f"Item map {path} needs the item token in its first column and an 'asin' column "
                             f"(columns: {columns}).")
        asin_of = {row[columns[0]]: (row["asin"] or "").strip() for row in reader}
    missing = [t for t in tokens if not asin_of.get(t)]
    if missing:
        raise InputError(f"Item map {path} has no ASIN for {len(missing)} item token(s) of the token list, "
                         f"e.g. {missing[:5]}.")
    repeated = [a for a, n in Counter(asin_of[t] for t in tokens).items() if n > 1]
    if repeated:
        raise InputError(f"Item map {path} gives {len(repeated)} ASIN(s) to more than one item, e.g. {repeated[:5]}.")
    return {t: asin_of[t] for t in tokens}


def _no_map_message(path, name):
    return (f"{path} not found: dataset {name} has no item map, so its item tokens cannot be linked to the "
            "ASINs of the Amazon files. Build it with --reviews FILE, "
            f"{REVIEWS_FILE}: the interactions are matched to this folder's by colour refinement, "
            "as amazon-baby's map was derived (dataset/README.md).")


def read_dataset_pairs(folder, name):
    """(user, item) token pairs of the folder's train, valid and test files."""
    pairs = set()
    for phase in PHASES:
        path = inter_path(folder, name, phase)
        _require_file(path, "a RecBole benchmark file (user and item token columns)")
        with open(path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(rows, None)
            pairs.update((row[0], row[1]) for row in rows if len(row) >= 2)
    return pairs


def _reviews_pairs(path, progress):
    for number, text in _gzip_lines(path, REVIEWS_FILE, progress):
        review = _dict_line(text, path, number, REVIEWS_FILE, json_first=True)
        user, asin = review.get("reviewerID"), review.get("asin")
        if not isinstance(user, str) or not isinstance(asin, str):
            raise InputError(f"{path} line {number} has no 'reviewerID' and 'asin' strings; expected {REVIEWS_FILE}.")
        yield user, asin


def _ratings_pairs(path, progress):
    with open(path, encoding="utf-8", newline="") as f:
        try:
            for number, row in enumerate(_progress(csv.reader(f), progress, desc=os.path.basename(path),
                                                   unit=" lines"), 1):
                if len(row) != 4:
                    raise InputError(f"{path} line {number} has {len(row)} fields; expected {REVIEWS_FILE}.")
                yield sys.intern(row[0]), sys.intern(row[1])  # a user's or item's many lines share one string
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text; expected {REVIEWS_FILE}.") from None


def five_core(pairs, k=K_CORE):
    """The largest subset of the (user, item) pairs in which every user and every item has ``k`` pairs
    (unique: MMRec's repeated dropping of both sides reaches the same set)."""
    pairs = set(pairs)
    while True:
        users, items = Counter(u for u, _ in pairs), Counter(i for _, i in pairs)
        kept = {(u, i) for u, i in pairs if users[u] >= k and items[i] >= k}
        if len(kept) == len(pairs):
            return kept
        pairs = kept


def read_asin_interactions(path, progress=True):
    """(user, ASIN) pairs of the 5-core: a gzip of reviews, or the ratings-only CSV."""
    _require_file(path, REVIEWS_FILE)
    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    pairs = five_core(_reviews_pairs(path, progress) if gzipped else _ratings_pairs(path, progress))
    if not pairs:
        raise InputError(f"{path} has no {K_CORE}-core interactions; expected {REVIEWS_FILE}.")
    return pairs


def stable_colours(adjacency, colours):
    """Colour refinement: recolour every node by its colour and its neighbours' colours until no
    class splits. One palette serves all nodes, so colours compare across disjoint graphs."""
    classes, rounds = len(set(colours)), 0
    while True:
        palette = {}
        colours = [palette.setdefault((colours[v], tuple(sorted(colours[w] for w in adjacency[v]))), len(palette))
                   for v in range(len(adjacency))]
        rounds += 1
        if len(palette) == classes:
            return colours, rounds
        classes = len(palette)


def match_items(dataset_pairs, source_pairs, dataset_name, source):
    """Dataset item token -> source item, the one correspondence that carries one graph of
    (user, item) pairs onto the other."""
    sides = []
    for pairs in (dataset_pairs, source_pairs):
        users, items = sorted({u for u, _ in pairs}), sorted({i for _, i in pairs})
        sides.append((users, items, pairs))
    (users_a, items_a, _), (users_b, items_b, _) = sides
    if (len(users_a), len(items_a), len(dataset_pairs)) != (len(users_b), len(items_b), len(source_pairs)):
        raise InputError(f"The {K_CORE}-core of {source} has {len(users_b)} users, {len(items_b)} items and "
                         f"{len(source_pairs)} interactions; dataset {dataset_name} has {len(users_a)}, "
                         f"{len(items_a)} and {len(dataset_pairs)}. They are not the same interactions "
                         "(give the file of the dataset's category).")
    adjacency = []
    for users, items, pairs in sides:  # one graph of both: users, then items, of each side
        offset = len(adjacency)
        index = {("u", u): offset + k for k, u in enumerate(users)}
        index.update({("i", i): offset + len(users) + k for k, i in enumerate(items)})
        adjacency += [[] for _ in index]
        for u, i in pairs:
            adjacency[index["u", u]].append(index["i", i])
            adjacency[index["i", i]].append(index["u", u])
    n, n_users = len(adjacency) // 2, len(users_a)
    colours, rounds = stable_colours(adjacency, ([0] * n_users + [1] * len(items_a)) * 2)
    if Counter(colours[:n]) != Counter(colours[n:]):
        raise InputError(f"The interactions of {source} and of dataset {dataset_name} have the same size but "
                         "differ: no one-to-one renaming of users and items carries one onto the other.")
    members = defaultdict(lambda: ([], []))
    for k, item in enumerate(items_a):
        members[colours[n_users + k]][0].append(item)
    for k, item in enumerate(items_b):
        members[colours[n + n_users + k]][1].append(item)
    ambiguous = [a for a, _ in members.values() if len(a) > 1]
    if ambiguous:
        examples = [group[:3] for group in ambiguous[:3]]
        raise InputError(f"{sum(map(len, ambiguous))} items of dataset {dataset_name} cannot be told apart by their "
                         f"interactions (groups such as {examples}): which ASIN each has is ambiguous, so no item "
                         "map is written.")
    mapping = {a[0]: b[0] for a, b in members.values()}
    baskets = [Counter(), Counter()]
    for side, (pairs, rename) in enumerate(((dataset_pairs, mapping), (source_pairs, None))):
        per_user = defaultdict(set)
        for u, i in pairs:
            per_user[u].add(rename[i] if rename else i)
        baskets[side].update(frozenset(s) for s in per_user.values())
    if baskets[0] != baskets[1]:
        raise InputError(f"The interactions of {source} and of dataset {dataset_name} could not be matched: "
                         "after renaming the items, the users' item sets differ.")
    print(f"item map: {len(mapping)} items matched one to one after {rounds} rounds of colour refinement; "
          f"all {len(dataset_pairs)} interactions agree")
    return mapping


def build_item_map(folder, name, reviews, tokens, progress=True):
    """Item token -> ASIN for every token of the token list, matched from the ASIN-keyed interactions."""
    mapping = match_items(read_dataset_pairs(folder, name), read_asin_interactions(reviews, progress), name, reviews)
    unlisted = [t for t in tokens if t not in mapping]
    if unlisted:
        raise InputError(f"{len(unlisted)} item token(s) of {name}'s token list have no interactions, e.g. "
                         f"{unlisted[:5]}; the interactions cannot give them an ASIN.")
    return {t: mapping[t] for t in tokens}


def _map_text(asin_of):
    """The item map's lines; MMRec numbers a category's 5-core items in ASIN order."""
    rank = {a: r for r, a in enumerate(sorted(asin_of.values()))}
    lines = ["\t".join(MAP_COLUMNS)] + [f"{t}\t{a}\t{rank[a]}" for t, a in asin_of.items()]
    return "\n".join(lines) + "\n"


def _item_asins(folder, name, tokens, reviews, progress):
    """(item token -> ASIN, the same when it is a new map to write, else None): from the folder's map,
    or built from ``reviews`` (which must then agree with the folder's map, if it has one)."""
    map_path = item_map_path(folder, name)
    if not reviews:
        return read_item_map(map_path, tokens), None
    built = build_item_map(folder, name, reviews, tokens, progress)
    if not os.path.isfile(map_path):
        return built, built
    old = read_item_map(map_path, tokens)
    differ = [t for t in tokens if old[t] != built[t]]
    if differ:
        raise InputError(f"The item map built from {reviews} gives {len(differ)} item(s) another ASIN than "
                         f"{map_path} (e.g. tokens {differ[:5]}); remove {map_path} to replace it.")
    print(f"item map: agrees with {map_path} for all {len(tokens)} items")
    return old, None


def build(dataset, meta=None, image_features=None, reviews=None, out="dataset", text_model=None, device=None,
          progress=True):
    """Write the ``text`` and/or ``image`` modality (and, with ``reviews``, the item map) into the
    prepared folder ``<out>/<dataset>/``; every input is read and checked before anything is written.
    Returns the folder."""
    if not (meta or image_features or reviews):
        raise InputError("Give --meta (text), --image-features (image) or both; --reviews builds the item map.")
    folder, token_list = dataset_paths(out, dataset)
    if not os.path.isdir(folder):
        raise MissingInputError(f"Dataset folder {folder} not found; amazon adds features to a prepared folder "
                                "such as the bundled dataset/amazon-baby (give its parent with --out).")
    tokens = read_item_tokens(token_list)
    map_path = item_map_path(folder, dataset)
    if not reviews and not os.path.isfile(map_path):
        raise MissingInputError(_no_map_message(map_path, dataset))
    if meta:
        _check_gzip(meta, META_FILE)
    if image_features:
        _check_image_file(image_features)
    if reviews:
        _require_file(reviews, REVIEWS_FILE)
    encoder = load_text_encoder(text_model, device) if meta else None
    asin_of, new_map = _item_asins(folder, dataset, tokens, reviews, progress)
    wanted = set(asin_of.values())
    matrices, notes = {}, []
    if image_features:
        rows, mean, used = read_image_features(image_features, wanted, progress)
        matrix = np.array([rows.get(asin_of[t], mean) for t in tokens], dtype=np.float32)
        matrices["image"] = matrix
        notes.append(f"image: {len(rows)} of {len(tokens)} items found in {image_features} ({used} records); "
                     f"{len(tokens) - len(rows)} got the mean row")
    if meta:
        sentences = read_metadata(meta, wanted, progress)
        found = [t for t in tokens if asin_of[t] in sentences]
        vectors = encode_texts([sentences[asin_of[t]] for t in found], encoder, batch_size=32, progress=progress)
        matrix, missing, _ = aligned_rows(tokens, found, vectors, meta)
        matrices["text"] = matrix
        notes.append(f"text: {len(found)} of {len(tokens)} items found in {meta}; {missing} got the mean row")
    if new_map:
        write_text(map_path, _map_text(new_map))
        print(f"item map: {len(new_map)} items -> {map_path}")
    for modality, matrix in matrices.items():
        path = write_features(folder, dataset, modality, matrix)
        print(f"{modality}: {matrix.shape[0]} x {matrix.shape[1]} -> {path}")
    for note in notes:
        print(note)
    present = [m for m in MODALITIES if os.path.isfile(feature_path(folder, dataset, m))]
    if matrices and len(present) == 1:
        print(f"{dataset} now has only the {present[0]} modality; runs need --modalities=[{present[0]}] "
              "(the dataset's yaml lists both)")
    return folder
