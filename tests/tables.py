"""What a faulty run's tables must share with a clean run's, read with SQL from the store."""

from __future__ import annotations

from pathlib import Path

from storage.store import Store


def recycle_tables(store: str | Path, run_id: str) -> dict[str, object]:
    """What must equal a clean run's: rows per table, no duplicates, the same decisions and scores."""
    st, run = Store(str(store)), f"'{run_id}'"

    def one(query: str) -> object:
        return st.sql(query).fetchall()[0][0]

    distinct = {"scores": "shard_key, source_id, variant", "reflections": "shard_key, source_id, stage"}
    return {
        "counts": {
            t: one(f"SELECT count(*) FROM {t} WHERE run_id = {run}")
            for t in ("reflections", "scores", "selected")
        },
        "duplicates": {
            t: one(f"SELECT count(*) - count(DISTINCT ({key})) FROM {t} WHERE run_id = {run}")
            for t, key in distinct.items()
        },
        "selected": st.sql(
            "SELECT source_id, kept, variant, reason, round(ifd_ppl, 6), round(rifd_ppl, 6) FROM selected "
            f"WHERE run_id = {run} ORDER BY source_id"
        ).fetchall(),
    }


def run_row(store: str | Path | Store, run_id: str, *columns: str) -> tuple:
    """The run's latest ``runs`` row (a run writes one when it starts and one when it ends)."""
    from storage.runs import LATEST_RUNS

    rows = (
        (store if isinstance(store, Store) else Store(str(store)))
        .sql(f"SELECT {', '.join(columns)} FROM ({LATEST_RUNS}) AS runs WHERE run_id = ?", params=[run_id])
        .fetchall()
    )
    assert len(rows) == 1, f"run {run_id}: {len(rows)} latest rows"
    return rows[0]
