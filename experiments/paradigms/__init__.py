"""The paradigm registry: a plain dict filled here. Adding a paradigm is one module in this
folder, one line below, and its jsPsych plugin in server/static/js/paradigms/."""

from __future__ import annotations

from experiments.paradigms.base import Paradigm
from experiments.paradigms.category_recognition import CategoryRecognition
from experiments.paradigms.human_vs_machine import HumanVsMachine
from experiments.paradigms.intruder import Intruder
from experiments.paradigms.two_afc import TwoAFC
from experiments.paradigms.utility import Utility

PARADIGMS: dict[str, Paradigm] = {
    "2afc_exemplar": TwoAFC(),
    "intruder": Intruder(),
    "category_recognition": CategoryRecognition(),
    "human_vs_machine": HumanVsMachine(),
    "utility": Utility(),
}
