"""Encoding item content: text and image feature files whose rows follow the dataset's token list."""

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, base_config, write_dataset
from recbole_mmssl.config import Config
from recbole_mmssl.data import MultiModalDataset
from recbole_mmssl.data.encode import encode_image_folder, encode_text_file, load_text_encoder, read_texts
from recbole_mmssl.errors import InputError

sentence_transformers = pytest.importorskip("sentence_transformers", reason="the [encode] extra is not installed")

MOVIES = [("m3", "Heat", "1995", "Action Crime"), ("m1", "Toy Story", "1995", "Animation Comedy"),
          ("m9", "Fargo", "1996", "Crime Drama"), ("m4", "Babe", "1995", "Children's Drama"),
          ("m7", "Alien", "1979", "Horror Sci-Fi")]


def write_csv(path, rows, header=("item", "title", "year", "genres"), sep=","):
    path.write_text(sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(device="cpu")


def test_bundled_minilm_reproduces_the_published_quick_start(minilm):
    """sentence-transformers' quick-start similarities for all-MiniLM-L6-v2, as its README prints them."""
    vectors = minilm.encode(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    similarity = vectors @ vectors.T / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_array_equal(np.round(similarity.astype(np.float64), 4), published)  # the four decimals printed


def test_read_texts_joins_columns_or_fills_the_template(tmp_path):
    path = write_csv(tmp_path / "movies.csv", MOVIES)
    tokens, texts = read_texts(str(path))
    assert tokens == ["m3", "m1", "m9", "m4", "m7"]
    assert texts[1] == "Toy Story. 1995. Animation Comedy"
    _, texts = read_texts(str(path), template="{title} ({year}). {genres}")
    assert texts[4] == "Alien (1979). Horror Sci-Fi"
    tsv = write_csv(tmp_path / "movies.tsv", MOVIES, sep="\t")
    assert read_texts(str(tsv))[1] == read_texts(str(path))[1]


@pytest.mark.parametrize("rows, template, message", [
    (MOVIES, "{title} ({released})", "names ['released']"),
    (MOVIES + [("m1", "Toy Story 2", "1999", "Comedy")], None, "item m1 already appeared on line 3"),
    ([("", "Nameless", "2000", "Drama")], None, "the item token (column 'item') is empty"),
])
def test_read_texts_refuses_bad_input(tmp_path, rows, template, message):
    path = write_csv(tmp_path / "movies.csv", rows)
    with pytest.raises(InputError, match=re.escape(message)):
        read_texts(str(path), template=template)


def test_encode_text_rows_equal_direct_encoding_in_token_order(tmp_path, minilm):
    path = write_csv(tmp_path / "movies.csv", MOVIES)
    out = tmp_path / "data"
    matrix_path = encode_text_file(str(path), "toy", out=str(out), template="{title} ({year}). {genres}",
                                   batch_size=2, device="cpu", progress=False)
    matrix = np.load(matrix_path)
    assert (out / "toy" / "toy.feature_items").read_text().split() == ["m3", "m1", "m9", "m4", "m7"]
    for row, (_, title, year, genres) in zip(matrix, MOVIES):
        direct = minilm.encode([f"{title} ({year}). {genres}"])[0]
        np.testing.assert_allclose(row, direct, atol=1e-5)


def test_encoded_text_round_trips_through_the_dataset_loader(tmp_path):
    """The loader gives every item the row of its own text, whatever the internal id order."""
    out = tmp_path / "data"
    splits = {"train": [("u1", "m7"), ("u1", "m3"), ("u2", "m9"), ("u2", "m4"), ("u3", "m1"), ("u3", "m7")],
              "valid": [("u1", "m9"), ("u2", "m1"), ("u3", "m3")], "test": [("u1", "m4"), ("u2", "m3"), ("u3", "m9")]}
    write_dataset(out, "toy", splits, token_order=["m9", "m4", "m7", "m3", "m1"])  # an existing list: rows follow it
    encode_text_file(str(write_csv(tmp_path / "movies.csv", MOVIES)), "toy", out=str(out), device="cpu",
                     progress=False)
    matrix = np.load(out / "toy" / "toy.text.npy")
    config = Config(model="VBPR", config_dict=base_config(tmp_path, "toy", modalities=["text"]))
    dataset = MultiModalDataset(config)
    table = dataset.modality_features["text"].numpy()
    listed = ["m9", "m4", "m7", "m3", "m1"]
    for item_id in range(1, dataset.item_num):
        token = dataset.id2token("item_id", item_id)
        np.testing.assert_array_equal(table[item_id], matrix[listed.index(token)])


def test_encode_text_fills_listed_items_without_text_with_the_mean(tmp_path):
    folder = write_dataset(tmp_path, "toy", {"train": [], "valid": [], "test": []}, token_order=["m1", "x", "m3"])
    encode_text_file(str(write_csv(tmp_path / "movies.csv", MOVIES)), "toy", out=str(tmp_path), device="cpu",
                     progress=False)
    matrix = np.load(folder / "toy.text.npy")
    np.testing.assert_allclose(matrix[1], (matrix[0] + matrix[2]) / 2, atol=1e-6)


def grid_image(path, colour, size=(40, 30)):
    from PIL import Image

    Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="module")
def lite():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [encode] extra is not installed")
    from recbole_mmssl.data.image_encoder import load_cnn

    return load_cnn(device="cpu")


def test_encode_image_shape_order_and_mean_row_for_missing_items(tmp_path, lite):
    from recbole_mmssl.data.image_encoder import encode_images

    covers = tmp_path / "covers"
    covers.mkdir()
    colours = {"b": (200, 30, 30), "d": (20, 160, 40), "e": (30, 30, 220)}
    for token, colour in colours.items():
        grid_image(covers / f"{token}.png", colour)
    grid_image(covers / "unlisted.jpg", (0, 0, 0))
    items = tmp_path / "items"
    items.write_text("a\nb\nc\nd\ne\n")
    path = encode_image_folder(str(covers), "toy", out=str(tmp_path / "data"), items=str(items), batch_size=2,
                               device="cpu", progress=False)
    matrix = np.load(path)
    assert matrix.shape == (5, 1280)
    direct = {t: encode_images([str(covers / f"{t}.png")], lite, progress=False)[0] for t in colours}
    for row, token in ((1, "b"), (3, "d"), (4, "e")):
        np.testing.assert_allclose(matrix[row], direct[token], rtol=1e-4, atol=1e-4)
    mean = np.mean([direct[t] for t in colours], axis=0)
    np.testing.assert_allclose(matrix[0], mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(matrix[0], matrix[2])
    assert (tmp_path / "data" / "toy" / "toy.feature_items").read_text().split() == list("abcde")


def test_bundled_image_weights_recognise_real_photos(lite):
    """The features feed the network's ImageNet classifier: scikit-learn's sample photos come out as
    'palace' (698) and 'daisy' (985), so the weights and the preprocessing are the trained ones."""
    import torch
    from sklearn.datasets import load_sample_images

    from recbole_mmssl.data.image_encoder import encode_images

    folder = load_sample_images().filenames
    features = encode_images(sorted(folder), lite, progress=False)  # china.jpg, flower.jpg
    logits = lite.features.network._fc(torch.from_numpy(features))
    assert logits.argmax(dim=1).tolist() == [698, 985]


def test_encode_image_errors(tmp_path, lite):
    covers = tmp_path / "covers"
    covers.mkdir()
    grid_image(covers / "a.png", (1, 2, 3))
    grid_image(covers / "a.jpg", (1, 2, 3))
    with pytest.raises(InputError, match="Item a has two images"):
        encode_image_folder(str(covers), "toy", out=str(tmp_path), progress=False)
    (covers / "a.jpg").unlink()
    (covers / "b.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="b.png cannot be read"):
        encode_image_folder(str(covers), "toy", out=str(tmp_path), progress=False)


def test_command_line_reports_bad_input_without_traceback(tmp_path):
    path = write_csv(tmp_path / "movies.csv", MOVIES)
    out = subprocess.run([sys.executable, "-m", "recbole_mmssl.data.encode", "text", str(path), "--name", "toy",
                          "--out", str(tmp_path), "--template", "{plot}"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: --template '{plot}' names ['plot']")
    assert "Traceback" not in out.stderr
