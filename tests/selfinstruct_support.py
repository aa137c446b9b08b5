"""A fake OpenAI-compatible server for the self-instruct tests: scripted or random faults (429, 5xx, hangs,
garbage bodies, truncated bodies, empty choices, unparsable answers, answers cut by the token limit) around
answers made of random words, so that every answer brings new tasks that pass the ROUGE-L filter."""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_WORDS = {
    "es": (
        "el la los las un una de del y que en por para con sin sobre entre hasta desde cuando donde como porque "
        "pero también muy más menos siempre nunca ahora después antes mientras casa ciudad pueblo escuela trabajo "
        "familia amigo madre padre hermano niño mujer hombre libro historia ciencia comida agua fuego tierra cielo "
        "mar río montaña árbol flor perro gato caballo pájaro coche tren camino puerta ventana mesa silla cama "
        "cocina jardín mercado tienda dinero tiempo día noche mañana semana año vida amor guerra paz idioma "
        "palabra pregunta respuesta problema solución idea razón ejemplo lugar país gobierno empresa verano "
        "invierno primavera otoño explica escribe describe compara resume enumera traduce clasifica corrige "
        "sugiere nuevo viejo grande pequeño bueno malo feliz triste rápido lento fácil difícil importante posible"
    ),
    "ja": (
        "日本 東京 学校 先生 学生 会社 仕事 家族 友達 天気 季節 料理 野菜 果物 電車 旅行 歴史 科学 経済 政治 文化 "
        "言葉 意味 説明 理由 方法 問題 答え 質問 環境 健康 病院 医者 公園 自然 動物 植物 海 山 川 空 雨 雪 春 夏 "
        "秋 冬 朝 夜 新しい 古い 大きい 小さい 美しい 難しい 簡単な 大切な について を の は が と で に ください "
        "書いて 教えて 比べて まとめて"
    ),
    "th": (
        "ประเทศ ไทย ภาษา อาหาร โรงเรียน นักเรียน ครู หนังสือ บ้าน ครอบครัว เพื่อน เมือง ทะเล ภูเขา แม่น้ำ ต้นไม้ "
        "ดอกไม้ สุนัข แมว รถไฟ รถยนต์ ถนน ตลาด เงิน เวลา วัน คืน ปี ชีวิต ความรัก สุขภาพ โรงพยาบาล หมอ อากาศ ฝน "
        "ฤดูร้อน ฤดูหนาว ประวัติศาสตร์ วิทยาศาสตร์ เศรษฐกิจ การเมือง วัฒนธรรม คำถาม คำตอบ ปัญหา วิธี เหตุผล "
        "ตัวอย่าง อธิบาย เขียน เปรียบเทียบ สรุป แปล แนะนำ ใหม่ เก่า ใหญ่ เล็ก สวยงาม ยาก ง่าย สำคัญ และ ของ ที่ ใน "
        "กับ เกี่ยวกับ"
    ),
}
WORDS = {lang: text.split() for lang, text in _WORDS.items()}
_JOIN = {"es": " ", "ja": "", "th": ""}
_COUNT = {"es": 8, "ja": 6, "th": 5}
_END = {"es": ".", "ja": "です。", "th": ""}
FAULTS = ("429", "500", "503", "hang", "garbage", "truncated", "no_choices", "unparsable", "length")
TRANSLATION_MARK = "Translate this task from English into"


def sentence(lang: str, rng: random.Random, words: int | None = None) -> str:
    return _JOIN[lang].join(rng.sample(WORDS[lang], words or _COUNT[lang]))


def prompt_language(prompt: str) -> str:
    if re.search("[\u0e00-\u0e7f]", prompt):
        return "th"
    return "ja" if re.search("[\u3040-\u30ff]", prompt) else "es"


def write_seeds(directory: Path, languages: tuple[str, ...] = ("es", "ja", "th"), count: int = 6) -> Path:
    """`directory/<lang>.jsonl` with `count` random-word seed tasks per language (MultiAlpaca records)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    for lang in languages:
        rows = [
            {"instruction": sentence(lang, rng), "input": None, "output": sentence(lang, rng, 10) + _END[lang]}
            for _ in range(count)
        ]
        (directory / f"{lang}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return directory


def write_english(path: Path, count: int = 5) -> Path:
    """A Self-Instruct-format English seed file."""
    rows = [
        {
            "id": f"seed_task_{i}",
            "instruction": f"Name {i + 2} fruits that are {('red', 'yellow', 'green', 'blue', 'purple')[i % 5]}.",
            "instances": [{"input": "", "output": "Apple, cherry, strawberry."}],
            "is_classification": False,
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FakeOpenAI:
    """`/v1/models` and `/v1/chat/completions` on 127.0.0.1:<free port>, in daemon threads.

    Each chat request takes the next entry of `script` (then draws from `faults` with probability
    `fault_rate`); "ok" answers carry `tasks_per_answer` new tasks in the prompt's language, some of them bad
    (blacklisted, empty output, English) when `bad_tasks`. Records prompts, translation requests and the most
    requests in flight at once.
    """

    def __init__(
        self,
        *,
        script: list[str] | None = None,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        tasks_per_answer: int = 3,
        bad_tasks: bool = False,
        api_key: str | None = None,
        delay: float = 0.0,
        hang: float = 3.0,
        seed: int = 0,
    ) -> None:
        self.script = list(script or [])
        self.fault_rate, self.faults = fault_rate, faults
        self.tasks_per_answer, self.bad_tasks = tasks_per_answer, bad_tasks
        self.api_key, self.delay, self.hang = api_key, delay, hang
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.prompts: list[str] = []
        self.served = Counter()
        self.inflight = self.max_inflight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if not fake._authorized(self):
                    return
                fake._send(self, 200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if not fake._authorized(self):
                    return
                with fake.lock:
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    fake._chat(self, body)
                finally:
                    with fake.lock:
                        fake.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def translations(self) -> int:
        return sum(TRANSLATION_MARK in p for p in self.prompts)

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        if self.api_key and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._send(handler, 401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
            return False
        return True

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: object, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _next_action(self) -> str:
        with self.lock:
            if self.script:
                return self.script.pop(0)
            return self.rng.choice(self.faults) if self.rng.random() < self.fault_rate else "ok"

    def _chat(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        prompt = body["messages"][-1]["content"]
        action = self._next_action()
        with self.lock:
            self.prompts.append(prompt)
            self.served[action] += 1
            rng = random.Random(self.rng.random())
        time.sleep(self.delay)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(handler, action, prompt, rng)

    def _answer(self, handler: BaseHTTPRequestHandler, action: str, prompt: str, rng: random.Random) -> None:
        if action in ("429", "500", "503"):
            headers = {"Retry-After": "0"} if action == "429" else {}
            self._send(handler, int(action), {"error": {"message": f"fake {action}"}}, headers)
            return
        if action == "hang":
            time.sleep(self.hang)
        if action == "garbage":
            self._send(handler, 200, b'{"choices": [{"message": {"content": "oops')
            return
        if action == "no_choices":
            self._send(handler, 200, {"id": "x", "object": "chat.completion", "choices": []})
            return
        text, finish = self._text(action, prompt, rng)
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        }
        if action == "truncated":
            data = json.dumps(payload, ensure_ascii=False).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        self._send(handler, 200, payload)

    def _text(self, action: str, prompt: str, rng: random.Random) -> tuple[str, str]:
        if action == "unparsable":
            return "Lo siento, no puedo ayudar con eso.", "stop"
        target = re.search(rf"{TRANSLATION_MARK} (\w+)", prompt)
        if target:
            lang = {"Spanish": "es", "Japanese": "ja", "Thai": "th"}[target.group(1)]
            output = sentence(lang, rng, 10) + _END[lang]
            return f" {sentence(lang, rng)}\n1. Input:\n<noinput>\n1. Output:\n{output}\n###", "stop"
        lang = prompt_language(prompt.split("###")[0])
        first = int(re.search(r"(\d+)\. Instruction:\s*$", prompt).group(1))
        blocks = []
        for i in range(first, first + self.tasks_per_answer):
            instruction, output = sentence(lang, rng), sentence(lang, rng, 10) + _END[lang]
            if self.bad_tasks and rng.random() < 0.3:
                instruction, output = rng.choice(
                    [
                        (f"{instruction} video", output),
                        (instruction, ""),
                        ("Write a short poem about the sea and the sky", "The sea is blue and the sky is wide."),
                    ]
                )
            label = "" if i == first else f"{i}. Instruction: "
            blocks.append(f"{label}{instruction}\n{i}. Input:\n<noinput>\n{i}. Output:\n{output}")
        text = " " + "\n###\n".join(blocks)
        if action == "length":
            return text + f"\n###\n{first + self.tasks_per_answer}. Instruction: {sentence(lang, rng)[:5]}", "length"
        return text, "stop"
