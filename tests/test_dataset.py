"""`build_dataset` called directly on the real judge-from-scratch files (the CLI's output is in test_cli_data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biasjudge.data.holdout import check_leakage, load_pairs
from biasjudge.dataset.build import OUTPUTS, DatasetBuild, MissingHoldoutError, ReadReport, build_dataset
from biasjudge.io import meta_path, read_json, read_records
from biasjudge.records import DPORow, SFTRow


@pytest.fixture(scope="module")
def reported() -> list[ReadReport]:
    return []


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, reported: list[ReadReport]) -> DatasetBuild:
    return build_dataset(shared_data, tmp_path_factory.mktemp("pipeline"), on_read=reported.append)


def test_files_and_sidecars(built: DatasetBuild) -> None:
    assert list(built.files) == [*OUTPUTS, "answer_key_kappa"]
    for name in OUTPUTS:
        path = built.files[name]
        assert path == built.out / f"{name}.jsonl"
        meta = read_json(meta_path(path))
        assert meta["stage"] == f"data/build/{name}"
        assert meta["counts"]["rows"] == built.rows[name] == sum(1 for _ in path.open())
    assert read_json(built.files["answer_key_kappa"])["used"] == "tie"


def test_counts_match_the_reference(built: DatasetBuild) -> None:
    # reference holdout; train pool = pairs_to_label less the 441 pairs whose question is held out
    assert built.rows == {
        "pairs": 2370,
        "holdout": 300,
        "train_pool": 1497,
        "unused": 132 + 441,
        "labelled": 1497,
        "sft": 2 * 1497,
        "dpo": 2 * 971,
    }
    assert built.notes["unused"] == "132 religion (OOD) + 441 sharing a question with the holdout"
    assert built.written.dpo.rejected_sources == {"hard_negative": 543, "verdict_flip": 428}
    assert sum(built.verdicts.values()) == 1497 and list(built.verdicts) == sorted(built.verdicts)
    assert sum(built.pool_buckets.values()) == 1497
    assert sum(built.written.sft_stats["bucket"].values()) == 2994
    assert built.seconds > 0


def test_zero_leakage_in_every_training_file(built: DatasetBuild) -> None:
    assert built.leakage.ok and built.leakage.n_train == 1497
    holdout = load_pairs(built.files["holdout"]).records
    for items in (
        load_pairs(built.files["train_pool"]).records,
        read_records(built.files["sft"], SFTRow).records,
        read_records(built.files["dpo"], DPORow).records,
    ):
        assert check_leakage(holdout, items).ok


def test_kappa_against_human_labels(built: DatasetBuild) -> None:
    in_dist = {setting: table.get("in_dist").kappa for setting, table in built.kappa.items()}
    assert {k: round(v, 3) for k, v in in_dist.items() if v is not None} == {"tie": 0.816, "biased_wins": 0.722}


def test_reads_are_reported_as_they_happen(built: DatasetBuild, reported: list[ReadReport]) -> None:
    assert reported == built.reads
    assert [(r.path.name, r.n_in, r.n_rejected, r.rejects_path) for r in built.reads] == [
        ("pairs.jsonl", 2370, 0, None),
        ("eval_set_unlabeled.jsonl", 300, 0, None),
        ("synthesis_results.jsonl", 779, 0, None),
    ]


def test_missing_reference_holdout_is_an_error(jfs: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "judge-from-scratch").mkdir(parents=True)
    lines = (jfs / "pairs.jsonl").read_text().splitlines(keepends=True)[:3]
    (data_dir / "judge-from-scratch" / "pairs.jsonl").write_text("".join(lines))
    with pytest.raises(MissingHoldoutError, match=r"eval_set_unlabeled\.jsonl not found"):
        build_dataset(data_dir, tmp_path / "out")
