"""Prompt sets (txt, csv, json, MS-COCO captions; limits with a seed; one-line errors), the seed -> prompt mapping,
the conf/prompts group, and the CLIP score on a tiny random CLIP saved with save_pretrained."""
import json
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tstitch.cli import CONF
from tstitch.data import prompts
from tstitch.errors import ConfigError

LINES = ["a cat on a mat", "two red boats", "a tree in fog"]


def coco(path):
    """A captions_*.json as MS-COCO ships it: images, then annotations (several per image, interleaved)."""
    data = {"info": {}, "licenses": [],
            "images": [{"id": 42, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.jpg"},
                       {"id": 9, "file_name": "c.jpg"}],
            "annotations": [{"id": 1, "image_id": 7, "caption": "A dog runs."},
                            {"id": 2, "image_id": 42, "caption": "A cat sleeps. "},
                            {"id": 3, "image_id": 7, "caption": "A brown dog."},
                            {"id": 4, "image_id": 9, "caption": "Boats."},
                            {"id": 5, "image_id": 42, "caption": "A cat on a sofa."}]}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name,content", [
    ("p.txt", "a cat on a mat\n\ntwo red boats\n  a tree in fog  \n"),
    ("p.csv", 'id,Prompt\n1,a cat on a mat\n2,"two red boats"\n3,a tree in fog\n'),
    ("c.csv", "caption,url\na cat on a mat,x\ntwo red boats,y\na tree in fog,z\n"),
    ("s.json", json.dumps(LINES)),
    ("o.json", json.dumps([{"caption": p, "id": i} for i, p in enumerate(LINES)])),
])
def test_formats(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    assert prompts.load(tmp_path / name) == LINES


def test_column_and_coco(tmp_path):
    (tmp_path / "p.csv").write_text("text,caption\nA,ignored\nB,ignored\n")
    assert prompts.load(tmp_path / "p.csv", column="text") == ["A", "B"]
    path = coco(tmp_path / "captions_val2014.json")
    assert prompts.load(path) == ["A cat sleeps.", "A dog runs.", "Boats."]  # image order, first caption each
    assert prompts.load(path, captions="all") == ["A dog runs.", "A cat sleeps.", "A brown dog.", "Boats.",
                                                  "A cat on a sofa."]


def test_limit_is_a_seeded_subset_in_file_order(tmp_path):
    (tmp_path / "p.txt").write_text("\n".join(f"prompt {i}" for i in range(100)))
    a, b = prompts.load(tmp_path / "p.txt", limit=10, seed=0), prompts.load(tmp_path / "p.txt", limit=10, seed=1)
    assert len(a) == 10 and a == prompts.load(tmp_path / "p.txt", limit=10, seed=0) and a != b
    assert a == sorted(a, key=lambda p: int(p.split()[1]))
    with pytest.raises(ConfigError, match=r"prompts.limit=101 but .* holds 100 prompts"):
        prompts.load(tmp_path / "p.txt", limit=101)


@pytest.mark.parametrize("name,content,match", [
    ("missing.txt", None, "prompt file not found"),
    ("empty.txt", "\n  \n", "holds no prompts"),
    ("p.csv", "url,id\nx,1\n", "has no prompt or caption field"),
    ("p.json", '{"a": 1}', "neither a list of prompts nor COCO caption annotations"),
    ("p.json", "[1, 2", "unreadable"),
    ("p.parquet", "x", "is not .txt, .csv or .json"),
    ("empty.csv", "", "holds no prompts"),
])
def test_errors_are_one_line(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=match) as err:
        prompts.load(tmp_path / name)
    assert "\n" not in str(err.value) and "prompts." in str(err.value)


def test_no_path():
    with pytest.raises(ConfigError, match="set prompts.path"):
        prompts.load("???")


def test_assign_seed_to_prompt():
    """Sample i (seed seed + i) gets prompt i % len(prompts), whatever batch the seeds come in."""
    ps = ["a", "b", "c"]
    assert prompts.assign(range(10, 17), ps, seed=10) == ["a", "b", "c", "a", "b", "c", "a"]
    assert prompts.assign([14, 15], ps, seed=10) == prompts.assign(range(10, 17), ps, seed=10)[4:6]
    assert prompts.assign(range(3), ps) == ps
    with pytest.raises(ConfigError, match="no prompts"):
        prompts.assign(range(3), [])


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF) / "prompts").glob("*.yaml")))
def test_prompts_group_composes(name, tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="tstitch", overrides=[f"prompts={name}"])
    kwargs = OmegaConf.to_container(cfg.prompts, resolve=True)
    assert set(kwargs) == {"path", "column", "captions", "limit", "seed", "negative", "negative_column",
                           "control_image", "control_image_column"}
    if kwargs["path"] == "???":  # a required path: the user gives it
        kwargs.update(path=str(coco(tmp_path / "captions_val2014.json")), limit=2)
    loaded = prompts.load(**kwargs)
    assert loaded and all(isinstance(p, str) and p for p in loaded)
    if name == "demo":
        assert len(loaded) == 8 and loaded == prompts.load(Path(CONF) / "prompts" / "demo.txt")


# --- CLIP score ---------------------------------------------------------------------------------------------------

def save_tiny_clip(root):
    """A tiny random CLIPModel + CLIPProcessor saved in ``root`` (from_pretrained-loadable)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 512, 513
    torch.manual_seed(2)  # a random CLIP whose mean cosine on the test's pairs is positive (0.28)
    config = CLIPConfig(text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=512,
                                         eos_token_id=513, pad_token_id=513),
                        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4),
                        projection_dim=16)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77))
    CLIPModel(config).save_pretrained(root)
    processor.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_score_on_a_tiny_clip(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    from tstitch.metrics.clip import clip_score, load_clip

    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    texts = ["a cat", "a dog", "boats", "a red tree", "fog"]
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    with torch.no_grad():  # the definition: mean of 100 * cos(image, text), floored at 0; CLIP's own forward
        out = model(**processor(text=texts, images=list(images), return_tensors="pt", padding=True))
        cos = (out.image_embeds * out.text_embeds).sum(-1)  # both unit-normalised, (5,)
    expected = float(100 * cos.mean())
    assert expected > 10  # not the floor at 0
    assert clip_score(images, texts, source=str(clip_dir), batch_size=2) == pytest.approx(expected, abs=1e-3)
    clip = load_clip(str(clip_dir))
    assert clip_score(images, texts, clip=clip) == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="5 images but 4 prompts"):
        clip_score(images, texts[:4], clip=clip)


def test_clip_weights_offline_and_missing(monkeypatch, tmp_path):
    from tstitch.metrics.clip import load_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="hf download openai/clip-vit-large-patch14") as err:
        load_clip()
    assert time.monotonic() - start < 5 and "\n" not in str(err.value) and "local directory" in str(err.value)
    with pytest.raises(ConfigError, match=f"cannot load the CLIP model from {tmp_path}"):
        load_clip(str(tmp_path))
