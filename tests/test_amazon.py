"""Amazon features from the published 2014 files: MMRec's sentences, exact image rows, the ASIN map, refusals."""

import ast
import csv
import gzip
import json
import random
import re
import struct

import numpy as np
import pytest

from conftest import REPO, base_config, toy_splits, write_dataset
from recbole_mmssl.data.amazon import build, mmrec_sentence
from recbole_mmssl.data.encode import load_text_encoder
from recbole_mmssl.data.prepare import main
from recbole_mmssl.errors import InputError, MissingInputError

pytest.importorskip("sentence_transformers", reason="the [encode] extra is not installed")

DIM = 4096
ASIN = {f"i{k}": f"B{k * 7919 % 1000000:09d}" for k in range(80)}  # item token -> ASIN of the toy dataset

# item token -> (metadata line as the published file writes it, the sentence MMRec's notebook makes of it:
# title, space, brand, space, first category path's entries each followed by a space, description; a missing
# or pandas-missing value is one space; newlines become spaces), written out by hand
PRODUCTS = {
    "i3": (repr({"asin": ASIN["i3"], "title": "Soft Crib Sheet", "brand": "Burt's Bees",
                 "categories": [["Baby", "Nursery", "Bedding"], ["Home & Kitchen"]],
                 "description": "Organic cotton.\nMachine wash.", "price": 19.99,
                 "imUrl": "http://ecx.images-amazon.com/images/I/41x.jpg",
                 "related": {"also_bought": ["B000000001"], "bought_together": ["B000000002"]},
                 "salesRank": {"Baby": 1200}}),
           "Soft Crib Sheet Burt's Bees Baby Nursery Bedding Organic cotton. Machine wash."),
    "i7": (repr({"asin": ASIN["i7"], "brand": "Graco", "categories": [["Baby", "Gear", "Strollers"]],
                 "description": "Folds flat."}),
           "  Graco Baby Gear Strollers Folds flat."),
    "i11": (repr({"asin": ASIN["i11"], "title": "Bébé bib – 2 pack", "brand": "NA",
                  "categories": [["Baby", "Feeding"]]}),
            "Bébé bib – 2 pack   Baby Feeding  "),
    "i20": (repr({"asin": ASIN["i20"], "title": "Teether", "brand": "", "categories": [],
                  "description": "Line one\nline two"}),
            "Teether   Line one line two"),
    "i42": ("{'asin': '%s', 'title': u'Caf\\xe9 Set', 'brand': u'Acme', 'categories': [['Baby']]}" % ASIN["i42"],
            "Café Set Acme Baby  "),
}
FOREIGN = [repr({"asin": "Z000000001", "title": "Tent", "categories": [["Sports & Outdoors"]]}),
           "{'asin': 'Z000000002', 'related': {'also_viewed': ['Z000000001']}, 'salesRank': {}}"]


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(device="cpu")


def write_meta(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    return path


def write_images(path, records):
    """The published layout, written with struct: 10 ASCII bytes, then 4096 little-endian float32."""
    with open(path, "wb") as f:
        for asin, vector in records:
            f.write(asin.encode("ascii") + struct.pack(f"<{DIM}f", *vector))
    return path


def write_item_map(folder, name, asin_of):
    with open(folder / f"{name}.item_map.tsv", "w", encoding="utf-8") as f:
        f.write("item_id\tasin\tmmrec_itemID\n")
        f.writelines(f"{t}\t{a}\t{k}\n" for k, (t, a) in enumerate(asin_of.items()))


@pytest.fixture
def toy(tmp_path):
    """A prepared amazon-baby folder of the toy split with an item map, the published-format files of
    some of its items, and the image vectors by record."""
    tokens = [f"i{k}" for k in np.random.default_rng(3).permutation(80)]
    folder = write_dataset(tmp_path / "data", "amazon-baby", toy_splits(), token_order=tokens)
    write_item_map(folder, "amazon-baby", ASIN)
    meta = write_meta(tmp_path / "meta_Baby.json.gz",
                      [FOREIGN[0], PRODUCTS["i3"][0], "", PRODUCTS["i7"][0], PRODUCTS["i11"][0], FOREIGN[1],
                       PRODUCTS["i20"][0], PRODUCTS["i42"][0]])
    rng = np.random.default_rng(4)
    records = [(a, rng.normal(size=DIM).astype(np.float32))
               for a in ["Z000000009", ASIN["i50"], ASIN["i3"], "Z000000008", ASIN["i79"], ASIN["i61"], ASIN["i7"],
                         ASIN["i50"]]]
    images = write_images(tmp_path / "image_features_Baby.b", records)
    return folder, tokens, meta, images, records


def listing(folder):
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())


def test_sentences_follow_mmrec_rule_to_the_space():
    for line, sentence in PRODUCTS.values():
        assert mmrec_sentence(ast.literal_eval(line)) == sentence


def test_text_and_image_rows_follow_the_token_list_through_the_item_map(toy, minilm, capsys):
    folder, tokens, meta, images, records = toy
    build("amazon-baby", str(meta), str(images), out=str(folder.parent), device="cpu", progress=False)
    text, image = np.load(folder / "amazon-baby.text.npy"), np.load(folder / "amazon-baby.image.npy")
    assert text.shape == (80, 384) and image.shape == (80, DIM)
    row = {t: r for r, t in enumerate(tokens)}
    for token, (_, sentence) in PRODUCTS.items():
        np.testing.assert_allclose(text[row[token]], minilm.encode([sentence])[0], atol=1e-5)
    described = [row[t] for t in PRODUCTS]
    text_mean = text[described].astype(np.float64).mean(axis=0)
    for token in tokens:
        if token not in PRODUCTS:
            np.testing.assert_allclose(text[row[token]], text_mean, atol=1e-6)

    pictured = {a: v for a, v in records}  # a repeated ASIN: the later record is the row...
    kept = [v for a, v in records if a in ASIN.values()]  # ...and both count in the mean, as MMRec's loop does
    image_mean = np.mean(np.stack(kept).astype(np.float64), axis=0)
    for token in tokens:
        if ASIN[token] in pictured:
            np.testing.assert_array_equal(image[row[token]], pictured[ASIN[token]])
        else:
            np.testing.assert_allclose(image[row[token]], image_mean, rtol=1e-6, atol=1e-7)
    out = capsys.readouterr().out
    assert f"text: 5 of 80 items found in {meta}; 75 got the mean row" in out
    assert f"image: 5 of 80 items found in {images} (6 records); 75 got the mean row" in out
    assert "--modalities" not in out


@pytest.mark.parametrize("source", ["meta", "images"])
def test_either_source_alone_writes_its_modality_and_says_what_runs_need(toy, capsys, source):
    folder, _, meta, images, _ = toy
    given = {"meta": str(meta)} if source == "meta" else {"image_features": str(images)}
    build("amazon-baby", out=str(folder.parent), device="cpu", progress=False, **given)
    written = "text" if source == "meta" else "image"
    assert sorted(p.name for p in folder.glob("*.npy")) == [f"amazon-baby.{written}.npy"]
    assert f"runs need --modalities=[{written}]" in capsys.readouterr().out


def truncated_gzip(path, lines):
    data = gzip.compress("".join(line + "\n" for line in lines).encode())
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "meta missing": (lambda d: {"meta": d / "missing.json.gz"}, "missing.json.gz not found"),
    "meta not gzip": (lambda d: {"meta": d / "plain.json"}, "plain.json is not a gzip file"),
    "meta cut short": (lambda d: {"meta": truncated_gzip(d / "cut.json.gz", [p for p, _ in PRODUCTS.values()] * 50)},
                       "cut.json.gz is not a complete gzip file"),
    "line not a dict literal": (lambda d: {"meta": write_meta(d / "bad.json.gz",
                                                              [FOREIGN[0], "{'asin': 'B1', 'title': }"])},
                                "bad.json.gz line 2 is not a dict literal"),
    "JSON literal": (lambda d: {"meta": write_meta(d / "json.json.gz", ['{"asin": "B1", "gift": true}'])},
                     "json.json.gz line 1 is not a dict literal"),
    "code, not a literal": (lambda d: {"meta": write_meta(d / "code.json.gz", [
        "{'asin': __import__('pathlib').Path('PWNED').write_text('x')}"])},
        "code.json.gz line 1 is not a dict literal"),
    "no asin": (lambda d: {"meta": write_meta(d / "noasin.json.gz", ["{'title': 'x'}"])},
                "noasin.json.gz line 1 has no 'asin'"),
    "no dataset ASIN in meta": (lambda d: {"meta": write_meta(d / "sports.json.gz", FOREIGN)},
                                "None of the dataset's 80 ASINs is in"),
    "binary size": (lambda d: {"image_features": d / "odd.b"}, "odd.b has 49189 bytes, not a multiple of the record "
                                                                 "size 16394"),
    "no dataset ASIN in binary": (lambda d: {"image_features": write_images(d / "foreign.b",
                                                                            [("Z000000001", [1.0] * DIM)])},
                                  "None of the dataset's 80 ASINs is in"),
    "image file missing": (lambda d: {"image_features": d / "missing.b"}, "missing.b not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_refused_inputs_name_the_file_and_write_nothing(toy, monkeypatch, case):
    folder, _, meta, images, records = toy
    root = folder.parent.parent
    monkeypatch.chdir(root)
    (root / "plain.json").write_text(PRODUCTS["i3"][0] + "\n")
    (root / "odd.b").write_bytes(images.read_bytes()[: 3 * 16394] + b"\0" * 7)
    bad, message = BAD_INPUTS[case]
    given = {"meta": meta, "image_features": images, **bad(root)}  # the other source is good: nothing written either
    before = listing(folder)
    with pytest.raises(InputError, match=re.escape(message)):
        build("amazon-baby", str(given["meta"]), str(given["image_features"]), out=str(folder.parent), device="cpu",
              progress=False)
    assert listing(folder) == before
    assert not (root / "PWNED").exists()


def test_a_folder_without_item_map_is_refused_with_how_to_build_one(tmp_path):
    folder = write_dataset(tmp_path, "amazon-sports", toy_splits(), token_order=list(ASIN))
    meta = write_meta(tmp_path / "meta.json.gz", [p for p, _ in PRODUCTS.values()])
    with pytest.raises(MissingInputError, match="amazon-sports.item_map.tsv not found: dataset amazon-sports has no "
                                                "item map.*--reviews FILE"):
        build("amazon-sports", str(meta), out=str(tmp_path), progress=False)
    assert not list(folder.glob("*.npy"))


def test_command_line_prints_one_error_line_and_exits_2(toy, capsys):
    folder, _, _, images, _ = toy
    with pytest.raises(SystemExit) as stop:
        main(["amazon", "--dataset", "amazon-baby", "--out", str(folder.parent), "--image-features", str(images) + "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {images}x not found") and err.count("\n") == 1


# ---- the item map, by matching the ASIN-keyed interactions to the folder's graph

def random_graph(seed=5, n_users=60, n_items=30):
    """HKUDS-style tokens: users '0'.. with 6-9 items each; every item has at least 5 users (a 5-core)."""
    rng = np.random.default_rng(seed)
    pairs = {(str(u), str(i)) for u in range(n_users) for i in rng.choice(n_items, rng.integers(6, 10), replace=False)}
    degrees = np.bincount([int(i) for _, i in pairs], minlength=n_items)
    assert degrees.min() >= 5
    return pairs


def graph_folder(root, pairs, name="amazon-sports"):
    by_user = {}
    for u, i in sorted(pairs):
        by_user.setdefault(u, []).append(i)
    splits = {"train": [], "valid": [], "test": []}
    for u, items in by_user.items():
        splits["train"] += [(u, i) for i in items[:-2]]
        splits["valid"].append((u, items[-2]))
        splits["test"].append((u, items[-1]))
    items = sorted({i for _, i in pairs}, key=int)
    return write_dataset(root, name, splits, token_order=random.Random(2).sample(items, len(items)))


def relabelled(pairs, seed=6):
    """The same interactions under reviewer and ASIN names, and the item renaming."""
    rng = random.Random(seed)
    items = sorted({i for _, i in pairs})
    asins = rng.sample([f"B{k:09d}" for k in range(1000, 9000, 7)], len(items))
    asin_of = dict(zip(items, asins))
    reviewer = {u: f"A{rng.getrandbits(40):X}" for u in sorted({u for u, _ in pairs})}
    renamed = [(reviewer[u], asin_of[i]) for u, i in pairs]
    rng.shuffle(renamed)
    return renamed, asin_of


def write_reviews(path, pairs):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for k, (user, asin) in enumerate(pairs):
            f.write(json.dumps({"reviewerID": user, "asin": asin, "reviewerName": "Zoë", "helpful": [0, 0],
                                "reviewText": "Great.", "overall": 5.0, "unixReviewTime": 1388275200 + k}) + "\n")
    return path


def read_map(folder, name="amazon-sports"):
    with open(folder / f"{name}.item_map.tsv", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_reviews_build_the_item_map_that_the_relabelling_hid(tmp_path):
    pairs = random_graph()
    folder = graph_folder(tmp_path / "data", pairs)
    renamed, asin_of = relabelled(pairs)
    build("amazon-sports", reviews=str(write_reviews(tmp_path / "reviews_5.json.gz", renamed)),
          out=str(tmp_path / "data"), progress=False)
    rows = read_map(folder)
    tokens = (folder / "amazon-sports.feature_items").read_text().split()
    assert [r["item_id"] for r in rows] == tokens
    assert {r["item_id"]: r["asin"] for r in rows} == asin_of
    ordered = sorted(asin_of.values())
    assert all(int(r["mmrec_itemID"]) == ordered.index(r["asin"]) for r in rows)


def test_ratings_csv_is_cut_to_its_5_core_before_matching(tmp_path):
    pairs = random_graph()
    folder = graph_folder(tmp_path / "data", pairs)
    renamed, asin_of = relabelled(pairs)
    core_users = sorted({u for u, _ in renamed})[:4]
    extra = [("AOUT", a) for a in sorted(asin_of.values())[:3]]  # 3 ratings: below the core
    extra += [(u, "BQ00000000") for u in core_users] + [("AW", "BQ00000000")]  # BQ: 5 raters, until AW goes
    extra += [("AW", a) for a in sorted(asin_of.values())[:3]]  # AW: 4 ratings
    with open(tmp_path / "ratings_Sports.csv", "w", encoding="utf-8") as f:
        f.writelines(f"{u},{a},4.0,1388275200\n" for u, a in renamed + extra)
    build("amazon-sports", reviews=str(tmp_path / "ratings_Sports.csv"), out=str(tmp_path / "data"), progress=False)
    assert {r["item_id"]: r["asin"] for r in read_map(folder)} == asin_of


def swap_two_edges(pairs):
    """Move two interactions so that every degree stays but the graph changes."""
    ordered = sorted(pairs)
    for (u1, i1) in ordered:
        for (u2, i2) in ordered:
            if u1 != u2 and i1 != i2 and (u1, i2) not in pairs and (u2, i1) not in pairs:
                return (pairs - {(u1, i1), (u2, i2)}) | {(u1, i2), (u2, i1)}
    raise AssertionError("no swap")


def with_twin(pairs, item="1", twin_of="0"):
    """Give ``item`` exactly the users of ``twin_of``: the interactions cannot tell the two apart."""
    users = {u for u, i in pairs if i == twin_of}
    return {(u, i) for u, i in pairs if i != item} | {(u, item) for u in users}


@pytest.mark.parametrize("case, message", [
    ("twin items", "2 items of dataset amazon-sports cannot be told apart by their interactions"),
    ("other graph", "differ|could not be matched"),
    ("other size", "has 61 users, 30 items and .* dataset amazon-sports has 60, 30 and"),
])
def test_ambiguous_or_failed_matches_are_refused(tmp_path, case, message):
    pairs = random_graph()
    if case == "twin items":
        pairs = with_twin(pairs)
    folder = graph_folder(tmp_path / "data", pairs)
    source = swap_two_edges(pairs) if case == "other graph" else set(pairs)
    if case == "other size":
        source |= {("999", str(i)) for i in range(5)}
    renamed, _ = relabelled(source)
    before = listing(folder)
    with pytest.raises(InputError, match=message):
        build("amazon-sports", reviews=str(write_reviews(tmp_path / "r.json.gz", renamed)),
              out=str(tmp_path / "data"), progress=False)
    assert listing(folder) == before


def test_reviews_check_an_existing_map_and_refuse_one_that_disagrees(tmp_path, capsys):
    pairs = random_graph()
    folder = graph_folder(tmp_path / "data", pairs, name="amazon-baby")
    renamed, asin_of = relabelled(pairs)
    reviews = str(write_reviews(tmp_path / "r.json.gz", renamed))
    write_item_map(folder, "amazon-baby", asin_of)
    build("amazon-baby", reviews=reviews, out=str(tmp_path / "data"), progress=False)
    assert "agrees with" in capsys.readouterr().out
    swapped = {**asin_of, "0": asin_of["1"], "1": asin_of["0"]}
    write_item_map(folder, "amazon-baby", swapped)
    before = listing(folder)
    with pytest.raises(InputError, match=r"gives 2 item\(s\) another ASIN than"):
        build("amazon-baby", reviews=reviews, out=str(tmp_path / "data"), progress=False)
    assert listing(folder) == before


# ---- a run on features prepared this way

def real_slice(root, n_users=50):
    """amazon-baby's published split, cut to its first users, with the bundled map's rows of their items."""
    bundled = REPO / "dataset" / "amazon-baby"
    users = {str(u) for u in range(n_users)}
    splits = {}
    for phase in ("train", "valid", "test"):
        with open(bundled / f"amazon-baby.{phase}.inter", encoding="utf-8") as f:
            rows = csv.reader(f, delimiter="\t")
            next(rows)
            splits[phase] = [(u, i) for u, i in rows if u in users]
    items = {i for pairs in splits.values() for _, i in pairs}
    with open(bundled / "amazon-baby.item_map.tsv", encoding="utf-8") as f:
        asin_of = {r["item_id"]: r["asin"] for r in csv.DictReader(f, delimiter="\t") if r["item_id"] in items}
    folder = write_dataset(root, "amazon-baby", splits, token_order=sorted(items, key=int))
    write_item_map(folder, "amazon-baby", asin_of)
    return folder, asin_of


def test_mmssl_trains_on_amazon_baby_prepared_from_the_published_formats(tmp_path, in_tmp):
    from recbole_mmssl.quick_start import run_recbole_mmssl

    folder, asin_of = real_slice(tmp_path / "data")
    rng = np.random.default_rng(8)
    words = ["crib", "stroller", "bottle", "blanket", "car seat", "monitor", "bib", "toy"]
    asins = sorted(asin_of.values())
    lines = [repr({"asin": a, "title": f"{rng.choice(words)} {k}", "brand": "Acme", "categories": [["Baby"]]})
             for k, a in enumerate(asins[::3])]
    meta = write_meta(tmp_path / "meta_Baby.json.gz", lines)
    images = write_images(tmp_path / "image_features_Baby.b",
                          [(a, rng.random(DIM).astype(np.float32)) for a in asins[::2]])
    build("amazon-baby", str(meta), str(images), out=str(tmp_path / "data"), device="cpu", progress=False)
    result = run_recbole_mmssl(model="MMSSL", dataset="amazon-baby",
                               config_dict=base_config(tmp_path, "amazon-baby", eval_batch_size=4096), saved=False)
    assert np.isfinite(list(result["test_result"].values())).all() and np.isfinite(result["best_valid_score"])
