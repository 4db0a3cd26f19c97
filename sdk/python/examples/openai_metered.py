"""Metering the official OpenAI client through AOS, in one line.

Needs the dev system (``cargo run -p aos-control-plane -- dev``), ``pip
install 'aos-sdk[openai]'``, and an OpenAI-compatible endpoint: the
``openai`` package reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` as
usual; ``OPENAI_MODEL`` picks the model (default ``gpt-4o-mini``).

Every ``chat.completions.create`` is checked by the agent before the call
(a PolicyStopped etc. is raised and the model is not called) and its
``usage`` is reported after it.
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI

from aos_sdk import AOSClient, PolicyError
from aos_sdk.openai import wrap_openai


def main() -> int:
    aos = AOSClient()  # AOS_AGENT_URL, default http://127.0.0.1:8000
    try:
        with aos.run(agent_id="research-bot", goal="answer a geography question") as run:
            client = wrap_openai(OpenAI(), run=run)  # the one line
            reply = client.chat.completions.create(
                model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=200,
            )
            print(f"answer: {reply.choices[0].message.content}")
            view = run.refresh()
    except PolicyError as refused:
        print(f"refused by AOS: {refused}", file=sys.stderr)
        return 1
    print(f"run {run.id}: {run.status}; the agent counted {view['usage']['tokens']} tokens in {view['steps']} step(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
