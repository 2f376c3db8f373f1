"""tstitch-demo (issue 25 item 7): the pairs it offers (stitch presets, two zoo names) checked before anything
loads; one click's images equal tstitch.pipeline's for the same settings, on the toy zoo and on a tiny SD pair made
here (prompt and negative prompt); one-line errors; and the page itself driven end to end in headless Chromium
(Debian's chromium + chromium-driver through selenium: no browser download), skipped in one line without them."""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

import tstitch
from tstitch.data.toy.data import CLASSES
from tstitch.errors import ConfigError
from tstitch.jobs.demo import Demo, caption, pairs

BIN = Path(sys.executable).parent


def pixels(image):
    return np.asarray(image)


# --- pairs ----------------------------------------------------------------------------------------------------------

def test_pairs_are_presets_or_two_zoo_names():
    """A preset brings its members (small first), its solver and rule; two zoo names the large family's own solver
    (None); a class-conditional pair its class names, a text-to-image one none. Nothing loads."""
    toy, named, sd = pairs(["toy", "toy/small+toy/large", "sd_bk_tiny_v1_4"])
    assert toy.label == "toy" and toy.names == ["toy-dit-small", "toy-dit-large"]
    assert (toy.solver, toy.rule, toy.classes) == ("ddim", "steps", list(CLASSES))
    assert named.label == "toy/small + toy/large" and named.solver is None and named.names == toy.names
    assert sd.classes is None and sd.solver == "scheduler" and sd.names[1] == "sd-v1-4"
    (ldm,) = pairs(["ldm_s_ldm"])  # class-conditional by its family, though its net has no num_classes
    assert ldm.names == ["ldm-s", "ldm-b"] and len(ldm.classes) == 1000 and ldm.solver == "ldm_ddim"


@pytest.fixture
def broken_preset(tmp_path, monkeypatch):
    (tmp_path / "stitch").mkdir()
    (tmp_path / "stitch" / "broken.yaml").write_text("defaults:\n  - /model@members.small: toy/nope\n")
    monkeypatch.setenv("TSTITCH_CONFIG_PATH", str(tmp_path))


def test_a_preset_that_does_not_compose_is_one_line(broken_preset):
    with pytest.raises(ConfigError, match=r"^pairs\[0\]='broken': the preset does not compose: .*toy/nope") as e:
        pairs(["broken"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("specs, match", [
    (["nope"], r"^pairs\[0\]='nope' is no stitch preset; choose one of .*toy, .*or give two zoo names"),
    (["toy/small+"], r"^pairs\[0\]='toy/small\+': give two zoo names joined by \+"),
    (["toy/small+toy/large+dit/xl2"], r"give two zoo names joined by \+"),
    (["toy/small+toy/nope"], r"^unknown zoo entry 'toy/nope'"),
    (["dit_s_b_xl"], r"^pairs\[0\]='dit_s_b_xl' stitches 3 member\(s\); the demo compares a pair"),
    (["toy/small+sd/v1_4"], r"take different conditions \(class labels and prompts\)"),
    (["toy", "toy"], r"^pairs\[1\]='toy' is listed twice"),
    (["controlnet_canny_ssd1b_sdxl"], r"^pairs\[0\]='controlnet_canny_ssd1b_sdxl': its members read a control image"),
    ([], r"^pairs is empty"),
])
def test_bad_pairs_are_one_line(specs, match):
    with pytest.raises(ConfigError, match=match) as e:
        pairs(specs)
    assert "\n" not in str(e.value)


# --- one click ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    return Demo(pairs(["toy"]))


def test_toy_click_is_the_pipelines_images(toy):
    """The stitched image is tstitch.pipeline's on the same seed, class, steps and fraction; the other is the large
    member's alone; NFE per member as the allocation says; the two differ."""
    stitched, large = toy.run("toy", "Sneaker", fraction=0.5, steps=10, seed=7)
    expected = tstitch.pipeline(["toy/small", "toy/large"], [0.5, 0.5], steps=10)([CLASSES.index("Sneaker")],
                                                                                  seeds=[7])[0]
    alone = tstitch.pipeline(["toy/large"], steps=10)([CLASSES.index("Sneaker")], seeds=[7])[0]
    assert np.array_equal(pixels(stitched.image), pixels(expected))
    assert np.array_equal(pixels(large.image), pixels(alone))
    assert np.abs(pixels(stitched.image).astype(int) - pixels(large.image)).mean() > 1  # grey levels
    assert (stitched.nfe, large.nfe) == ([5, 5], [0, 10])
    assert stitched.seconds > 0 and large.seconds > 0
    assert caption(stitched, ["s", "l"]).endswith("NFE: s 5 + l 5")
    assert caption(large, ["s", "l"], alone=True).endswith("NFE: l 10")
    again, _ = toy.run("toy", CLASSES.index("Sneaker"), 0.5, 10.0, 7.0)  # an index; a page's numbers come as floats
    assert np.array_equal(pixels(again.image), pixels(stitched.image))


@pytest.mark.parametrize("args, match", [
    (("toy", "Parka", 0.5, 10, 0), r"^class 'Parka' is not one of toy's: give a name \(T-shirt/top, "),
    (("toy", 10, 0.5, 10, 0), r"an index in \[0, 10\)"),
    (("toy", 0, 1.5, 10, 0), r"each must be in \[0, 1\]|fraction"),
    (("toy", 0, 0.5, 0, 0), r"^steps=0 is not allowed: give an integer >= 1$"),
    (("toy", 0, 0.5, 2.5, 0), r"^steps=2.5 is not allowed"),
    (("toy", 0, 0.5, 10, -1), r"^seed=-1 is not allowed"),
    (("toy", 0, 0.5, 10, 0, "blurry"), r"class-conditional: a negative prompt does not apply"),
    (("dit", 0, 0.5, 10, 0), r"^unknown pair 'dit'; the page offers toy$"),
])
def test_bad_clicks_are_one_line_before_sampling(toy, args, match):
    with pytest.raises(ConfigError, match=match):
        toy.run(*args)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """Two tiny random SD-1 pipelines saved as diffusers does, their zoo entries and a stitch preset in a config
    folder of the user's (TSTITCH_CONFIG_PATH), as a user adds models."""
    from test_sd import entry, save_sd

    root = tmp_path_factory.mktemp("demo_sd")
    conf = root / "conf"
    for name, width, seed in (("small", 32, 0), ("large", 48, 1)):
        path = save_sd(root / name, width, seed=seed)
        (conf / "model" / "tiny").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(entry(path, f"tiny-{name}", net={"cross_attention_dim": width}),
                       conf / "model" / "tiny" / f"{name}.yaml")
    (conf / "stitch").mkdir()
    (conf / "stitch" / "tiny_sd.yaml").write_text(
        "defaults:\n  - /model@members.small: tiny/small\n  - /model@members.large: tiny/large\n"
        "  - override /solver@_global_.solver: scheduler\nfractions: [0.4, 0.6]\nrule: steps\ncodec: null\n")
    return conf


@pytest.mark.usefixtures("diffusers_quiet")
def test_text_pair_on_tiny_sd_is_the_pipelines_images(tiny_sd, monkeypatch):
    """A text-to-image preset from the user's config folder: prompt and negative prompt, the scheduler the models
    ship; the images equal tstitch.pipeline's with the same negative prompt, which changes them."""
    monkeypatch.setenv("TSTITCH_CONFIG_PATH", str(tiny_sd))
    (pair,) = pairs(["tiny_sd"])
    assert pair.classes is None and pair.solver == "scheduler" and pair.names == ["tiny-small", "tiny-large"]
    demo = Demo([pair])
    stitched, large = demo.run("tiny_sd", "two red boats", 0.5, 6, 3, negative_prompt="blurry")
    pipe = tstitch.pipeline(["tiny/small", "tiny/large"], [0.5, 0.5], solver="scheduler", steps=6)
    expected = pipe(["two red boats"], seeds=[3], negative_prompts="blurry")[0]
    assert pixels(stitched.image).shape == (16, 16, 3)
    assert np.array_equal(pixels(stitched.image), pixels(expected))
    assert np.array_equal(pixels(large.image), pixels(pipe(["two red boats"], seeds=[3], negative_prompts="blurry",
                                                           fractions=[0.0, 1.0])[0]))
    assert stitched.nfe[0] > 0 and stitched.nfe[1] > 0 and large.nfe[0] == 0 and sum(large.nfe) == sum(stitched.nfe)
    plain, _ = demo.run("tiny_sd", "two red boats", 0.5, 6, 3, negative_prompt="  ")  # blank: no negative prompt
    assert np.array_equal(pixels(plain.image), pixels(pipe(["two red boats"], seeds=[3])[0]))
    assert not np.array_equal(pixels(plain.image), pixels(stitched.image))
    with pytest.raises(ConfigError, match=r"^tiny_sd is text-to-image: give a prompt, not 3$"):
        demo.run("tiny_sd", 3, 0.5, 6, 3)


# --- the command ----------------------------------------------------------------------------------------------------

def test_help_and_its_examples(in_process, tmp_path, monkeypatch):
    """--help says what the page does; its examples compose and their pairs resolve (writing nothing)."""
    import shlex

    import torch

    from tstitch.cli import preflight

    r = in_process("tstitch-demo", "--help", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("tstitch-demo: a web page (Gradio)")
    assert not (tmp_path / "outputs").exists()
    examples = [line.split("  #")[0].strip() for line in r.stdout.split("Examples:")[1].splitlines()[1:4]]
    assert len(examples) == 3 and all(e.startswith("tstitch-demo") for e in examples)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for example in examples:
        cfg = preflight("demo", shlex.split(example)[1:])
        assert [p.label for p in pairs(cfg.pairs)][0] in ("toy", "sd_bk_tiny_v1_4")


def test_command_errors_are_one_line_before_serving(in_process, tmp_path):
    """A bad pair, a bad value and a port in use: one line each, exit code 2, no run directory."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [(["pairs=[nope]"], "error: pairs[0]='nope' is no stitch preset"),
                 (["fraction=2"], "error: fraction=2 is not allowed: give a number in [0, 1]"),
                 ([f"server.port={port}"], f"error: server.port={port} on 127.0.0.1: ")]
        for args, start in cases:
            r = in_process("tstitch-demo", *args, cwd=tmp_path)
            assert r.returncode == 2, r.stderr[-2000:]
            assert r.stderr.startswith(f"tstitch-demo: {start}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "outputs").exists()


# --- the page in a real browser -------------------------------------------------------------------------------------

def chromium():
    """(chromium, chromedriver) paths, or a one-line skip."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver; "
                    "setup.sh installs them)")
    return browser, driver


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """tstitch-demo on the toy zoo, on a free port, as a user starts it (the browser found first, else a skip);
    stopped by SIGTERM."""
    browser, driver = chromium()
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "demo.out", "w")
    proc = subprocess.Popen([str(BIN / "tstitch-demo"), f"server.port={port}", f"hydra.run.dir={tmp_path / 'run'}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"tstitch-demo did not serve {url}: {(tmp_path / 'demo.out').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, tmp_path, browser, driver
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_page_in_headless_chromium_gives_the_pipelines_image(server):
    """Set class, fraction, steps and seed on the page, click Generate, read both images back through their URLs:
    PNGs of the toy zoo's size, the stitched one tstitch.pipeline's image for the same settings, pixel for pixel,
    the large member's alone another; the captions give each time and NFE per member."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, tmp_path, browser, driver_path = server
    options = Options()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)  # --no-sandbox: root in CI
    page = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        page.get(url)
        wait = WebDriverWait(page, 30)
        wait.until(lambda p: p.find_elements(By.CSS_SELECTOR, "#generate"))

        def type_into(selector, text, enter=False):
            box = page.find_element(By.CSS_SELECTOR, selector)
            box.click()
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.BACKSPACE)
            box.send_keys(text)
            box.send_keys(Keys.ENTER if enter else Keys.TAB)

        type_into("#class input", "Sneaker", enter=True)
        type_into("#fraction input[type=number]", "0.5")
        type_into("#steps input[type=number]", "10")
        type_into("#seed input", "7")
        assert not [e for e in page.find_elements(By.CSS_SELECTOR, "#prompt") if e.is_displayed()]  # class pair
        page.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda p: "NFE" in p.find_element(By.CSS_SELECTOR, "#large-info").text)
        captions = [page.find_element(By.CSS_SELECTOR, f"#{k}-info").text for k in ("stitched", "large")]
        images = {}
        for key in ("stitched", "large"):
            src = page.find_element(By.CSS_SELECTOR, f"#{key} img").get_attribute("src")
            with urllib.request.urlopen(src, timeout=10) as r:
                data = r.read()
            assert data[:8] == b"\x89PNG\r\n\x1a\n", src
            images[key] = Image.open(io.BytesIO(data))
    finally:
        page.quit()
    assert captions[0].startswith("stitched: ") and captions[0].endswith("NFE: toy-dit-small 5 + toy-dit-large 5")
    assert captions[1].endswith("NFE: toy-dit-large 10") and "one wall-clock reading" in captions[1]
    assert all(im.size == (28, 28) and im.mode == "L" for im in images.values())
    expected = tstitch.pipeline(["toy/small", "toy/large"], [0.5, 0.5], steps=10)([CLASSES.index("Sneaker")],
                                                                                  seeds=[7])[0]
    alone = tstitch.pipeline(["toy/large"], steps=10)([CLASSES.index("Sneaker")], seeds=[7])[0]
    assert np.array_equal(pixels(images["stitched"]), pixels(expected))
    assert np.array_equal(pixels(images["large"]), pixels(alone))
    assert not np.array_equal(pixels(images["stitched"]), pixels(images["large"]))
