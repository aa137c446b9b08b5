"""The chat page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium):
open `/`, send a message, watch the reply stream in, then a second turn that carries the first."""

from __future__ import annotations

import os
import shutil
import time
from itertools import pairwise

import pytest

from polylm.generate import TextGenerator
from polylm.hf_checkpoint import load_model
from polylm.serve import ServeSettings, create_app
from polylm.tokenizer import Tokenizer
from serve_support import ServerThread, make_model_dir, metric, request, slow_down

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow

# The flags the environment notes give for Chromium on these machines: root needs --no-sandbox; without the
# background-networking ones Chromium keeps trying (and failing) to reach the network.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus_tokenizer):
    model_dir = make_model_dir(tmp_path_factory.mktemp("serve") / "tiny", corpus_tokenizer)

    def load() -> TextGenerator:
        model = load_model(model_dir)
        slow_down(model, 0.04)  # ~25 tokens/s: slow enough to watch the reply grow
        return TextGenerator(model, Tokenizer.from_dir(model_dir))

    settings = ServeSettings(model=str(model_dir), served_model_name="tiny", template="chat")
    with ServerThread(create_app(settings, loader=load)) as running:
        running.wait_ready()
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def send_and_watch(browser, text: str, timeout: float = 60.0) -> tuple[str, list[str]]:
    """Type `text`, press Send, and sample the last reply bubble until it is done: (final text, states seen)."""
    from selenium.webdriver.common.by import By

    before = len(browser.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    box = browser.find_element(By.ID, "input")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        if len(replies) > before:
            reply = replies[-1]
            state = browser.execute_script("return [arguments[0].textContent, arguments[0].dataset.done]", reply)
            if state[0] and (not seen or seen[-1] != state[0]):
                seen.append(state[0])
            if state[1] == "true":
                errors = browser.find_elements(By.CSS_SELECTOR, ".msg.error")
                assert not errors, errors[0].text
                return state[0], seen
        time.sleep(0.02)
    raise AssertionError(f"no finished reply within {timeout} s; seen {seen}")


def test_chat_page_streams_a_reply(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server.url + "/")
    assert browser.title == "PolyLM chat"
    WebDriverWait(browser, 30).until(lambda d: "model: tiny" in d.find_element(By.ID, "status").text)
    Select(browser.find_element(By.ID, "template")).select_by_value("chat")
    for field, value in (("temperature", "0"), ("max_tokens", "24")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)

    reply, seen = send_and_watch(browser, "Bonjour, comment ça va ?")
    assert len(seen) >= 3, f"the reply did not arrive in pieces: {seen}"
    assert all(later.startswith(earlier) for earlier, later in pairwise(seen))
    first_turn = [{"role": "user", "content": "Bonjour, comment ça va ?"}]
    body = {"messages": first_turn, "temperature": 0, "max_tokens": 24, "template": "chat"}
    status, answer = request(server.url, "POST", "/v1/chat/completions", body)
    assert status == 200 and reply == answer["choices"][0]["message"]["content"]

    # Second turn: the page sends the whole conversation, rendered by the chat template.
    prompt_tokens = metric(server.url, "polylm_prompt_tokens_total")
    second, _ = send_and_watch(browser, "Und auf Deutsch?")
    time.sleep(0.2)  # the usage is counted as the stream closes
    page_prompt_tokens = metric(server.url, "polylm_prompt_tokens_total") - prompt_tokens
    messages = [*first_turn, {"role": "assistant", "content": reply}, {"role": "user", "content": "Und auf Deutsch?"}]
    status, answer = request(server.url, "POST", "/v1/chat/completions", {**body, "messages": messages})
    assert status == 200 and second == answer["choices"][0]["message"]["content"]
    assert page_prompt_tokens == answer["usage"]["prompt_tokens"]  # the same two-turn prompt

    os.makedirs(os.environ.get("POLYLM_SCREENSHOTS", "/tmp"), exist_ok=True)
    browser.save_screenshot(os.path.join(os.environ.get("POLYLM_SCREENSHOTS", "/tmp"), "polylm-chat.png"))
