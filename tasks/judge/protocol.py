"""The reference judge protocol (Cherry_LLM ``evaluation/generation/eval.py``): its prompt, its reply
form and its parser, as pure functions around an engine (``format_input`` / ``format_output``).

- A pair: the question and two answers between start and end markers, and criteria asking for two
  scores from 1 to 10 on the first line, then an explanation. Sent at temperature 0 with at most 256
  new tokens, as the reference sent it to GPT-4.
- A rating: the same words for one answer and one score (AlpaGasus rates single answers).
- A reply's scores are read as the reference reads them: the first line, commas made spaces, split
  on single spaces, exactly two numbers. Where the reference logged an error and stored ``[-1, -1]``
  (which its aggregation then counted as a tie) the reply here is *failed*, with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.conversation import History
from tasks.engine import ChatRequest, Sampling
from tasks.prompts import render, version
from tasks.teacher.forms import ReplyForm, fitting_form, judge_form

# The reference's decoding: greedy, 256 new tokens, top_p 1.
JUDGE_SAMPLING = Sampling(max_tokens=256, temperature=0.0, top_p=1.0, seed=0)
PAIR_PROMPT = "judge_pair"
RATING_PROMPT = "judge_rating"
NO_SCORE_PAIR = "no_score_pair"
NO_RATING = "no_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"


def question_text(instruction: str, input: str = "", history: History = ()) -> str:
    """The question a judge sees: the instruction, and its input the way the reference joined
    Self-Instruct's (``{instruction} Input: {input}``). After a conversation's history, the earlier
    messages come first, one paragraph each (``System: ...``, ``User: ...``, ``Assistant: ...``), and
    the question is the last ``User:`` one, so the judge weighs the answer to the turn it ends."""
    question = f"{instruction} Input: {input}" if input else instruction
    if not history:
        return question
    turns = [f"{role.capitalize()}: {content}" for role, content in (*history, ("user", question))]
    return "\n\n".join(turns)


def prompt_version(name: str, form: ReplyForm | None) -> str:
    """The version recorded with every verdict: the prompt's, marked ``+grammar`` when the reply was
    constrained to the form."""
    return version(name) + ("+grammar" if form is not None else "")


def pair_form(sampling: Sampling, constrained: bool) -> ReplyForm | None:
    return fitting_form(judge_form(sampling.max_tokens, 2)) if constrained else None


def rating_form(sampling: Sampling, constrained: bool) -> ReplyForm | None:
    return fitting_form(judge_form(sampling.max_tokens, 1)) if constrained else None


def pair_request(question: str, answer_1: str, answer_2: str, form: ReplyForm | None) -> ChatRequest:
    """The reference prompt with ``answer_1`` shown as Assistant 1's."""
    user = render(PAIR_PROMPT, verbatim=True, question=question, answer_1=answer_1, answer_2=answer_2)
    return ChatRequest.user(user, system=render("judge_system"), form=form)


def rating_request(question: str, answer: str, form: ReplyForm | None) -> ChatRequest:
    user = render(RATING_PROMPT, verbatim=True, question=question, answer=answer)
    return ChatRequest.user(user, system=render("judge_system"), form=form)


@dataclass(frozen=True)
class Scores:
    """The scores a reply gave (``values``), or why it gave none (``error``)."""

    values: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _first_line(text: str) -> str:
    line = text.split("\n")[0]
    return line if len(line) <= 60 else line[:57] + "..."


def parse_score_pair(text: str) -> Scores:
    """The two scores of a pair reply, read exactly as the reference's ``parse_score`` reads them."""
    parts = text.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) == 2:
        try:
            return Scores((float(parts[0]), float(parts[1])))
        except ValueError:
            pass
    return Scores(error=f"{NO_SCORE_PAIR}: first line {_first_line(text)!r}")


def parse_rating(text: str) -> Scores:
    """The score of a rating reply: the first line holds one number from 1 to 10 (``8``, ``8/10``)."""
    line = text.split("\n")[0].strip()
    head = line.removesuffix("/10").strip()
    try:
        value = float(head)
    except ValueError:
        return Scores(error=f"{NO_RATING}: first line {_first_line(text)!r}")
    if not 1 <= value <= 10:
        return Scores(error=f"{RATING_OUT_OF_RANGE}: {value:g}")
    return Scores((value,))
