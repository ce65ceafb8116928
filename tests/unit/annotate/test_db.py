"""The annotation database: loading, leases and their expiry, actions, undo, idempotent request
ids, state folded from the event log, reload."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mentoring.annotate.db import (
    AnnotateError,
    AnnotationDB,
    Conflict,
    NotFound,
    TaskSetMismatch,
)
from mentoring.feedback.schema import MiningTasks
from tests.factories import area, make_tasks
from tests.unit.annotate.conftest import LEASE_S, Clock, small_tasks


def _ids(db: AnnotationDB, op: str) -> str | None:
    image = db.next_image(op).image
    return None if image is None else image.image_id


def _answer_all(db: AnnotationDB, op: str, image_id: str, verdict: str = "defect") -> None:
    for a in db.image_state(image_id).areas:
        db.verdict(op, f"{op}-{a.area_id}-{verdict}", image_id, a.area_id, verdict)


# -- loading -----------------------------------------------------------------------------------


def test_pragmas_wal_and_full_sync(db: AnnotationDB) -> None:
    conn = db._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_loading_the_same_tasks_again_is_a_no_op(db: AnnotationDB, tasks: MiningTasks) -> None:
    db.next_image("op-1")
    assert db.load_tasks(tasks, "a" * 64, "elsewhere/tasks.json") is False
    info = db.info()
    assert (info.n_images, info.n_areas, info.sha256) == (4, 5, "a" * 64)
    assert info.classes == ["scratch", "stain"] and info.size == (32, 32)


def test_another_task_set_is_refused_naming_both_sha256(db: AnnotationDB) -> None:
    other = make_tasks({"img-z": [area("img-z/stain/0", "stain", [(0, 0)])]})
    with pytest.raises(TaskSetMismatch) as err:
        db.load_tasks(other, "b" * 64, "new/tasks.json")
    assert "a" * 64 in str(err.value) and "b" * 64 in str(err.value)
    assert "new/tasks.json" in str(err.value) and "tasks.json" in str(err.value)
    assert db.info().n_images == 4  # nothing of the other set went in


def test_ids_used_twice_in_the_tasks_are_named(tmp_path: Path) -> None:
    dup = make_tasks(
        {
            "img-a": [area("x/0", "stain", [(0, 0)]), area("x/0", "stain", [(1, 1)])],
            "img-b": [],
        }
    )
    dup = dup.model_copy(update={"images": [*dup.images, dup.images[1]]})
    db = AnnotationDB(tmp_path / "d.sqlite")
    with pytest.raises(AnnotateError, match="ids used twice") as err:
        db.load_tasks(dup, "c" * 64, "dup.json")
    assert "area 'x/0'" in str(err.value) and "image 'img-b'" in str(err.value)
    with pytest.raises(AnnotateError, match="no task set loaded"):
        db.info()


# -- leases ------------------------------------------------------------------------------------


def _leased(db: AnnotationDB) -> dict[str, str | None]:
    return {s.image_id: s.leased_to for s in db.states()}


def test_next_image_leases_in_task_order_and_never_to_two_operators(db: AnnotationDB) -> None:
    first = db.next_image("op-1")
    assert first.image is not None and first.image.image_id == "img-a"
    assert first.image.leased_to == "op-1"
    # img-b is leased ahead with img-a (the page's next image is op-1's), img-c, img-d are free
    assert [f.image_id for f in first.following] == ["img-b", "img-c", "img-d"]
    assert first.ahead == 1
    assert [f.leased_to for f in first.following] == ["op-1", None, None]
    assert _ids(db, "op-2") == "img-c"  # img-a and img-b are op-1's
    assert _ids(db, "op-1") == "img-a"  # still holding it, not finished
    assert _ids(db, "op-3") is None  # img-c and img-d (ahead) are op-2's
    nxt = db.next_image("op-2")
    assert nxt.image is not None and nxt.image.image_id == "img-c"
    assert [f.image_id for f in nxt.following] == ["img-d"] and nxt.ahead == 1
    grants = [(r["image_id"], r["operator"]) for r in db.lease_log() if r["kind"] == "grant"]
    assert grants == [("img-a", "op-1"), ("img-b", "op-1"), ("img-c", "op-2"), ("img-d", "op-2")]


def test_the_image_leased_ahead_comes_next_and_the_ahead_moves_on(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    _answer_all(db, "op-1", "img-a")
    nxt = db.next_image("op-1")
    assert nxt.image is not None and nxt.image.image_id == "img-b"  # the one leased ahead
    assert [f.image_id for f in nxt.following][:1] == ["img-c"] and nxt.ahead == 1
    assert _leased(db) == {"img-a": "op-1", "img-b": "op-1", "img-c": "op-1", "img-d": None}
    # a skip releases the current image only: the one ahead becomes current
    db.skip("op-1", "r-skip-b", "img-b")
    assert _ids(db, "op-1") == "img-c"
    assert _leased(db)["img-b"] is None and _leased(db)["img-d"] == "op-1"


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_an_operator_never_holds_more_than_current_and_n_ahead(
    tmp_path: Path, clock: Clock, tasks: MiningTasks, ahead: int
) -> None:
    db = AnnotationDB(tmp_path / "n.sqlite", lease_s=LEASE_S, clock=clock, lease_ahead=ahead)
    db.load_tasks(tasks, "a" * 64, "tasks.json")

    def held(op: str) -> list[str]:
        return [i for i, o in _leased(db).items() if o == op and not db.image_state(i).done]

    try:
        res = db.next_image("op-1")
        assert res.ahead == ahead and held("op-1") == ["img-a", "img-b", "img-c"][: 1 + ahead]
        _answer_all(db, "op-1", "img-a")
        _answer_all(db, "op-1", db.next_image("op-1").image.image_id)  # type: ignore[union-attr]
        db.next_image("op-1")
        assert len(held("op-1")) <= 1 + ahead
        # an undo takes img-b back on top: the last leased ahead is released, img-b is kept
        db.undo("op-1", "u-000001")
        assert "img-b" in held("op-1") and len(held("op-1")) <= 1 + ahead
        assert _ids(db, "op-1") == "img-b"
        assert len(held("op-1")) <= 1 + ahead
    finally:
        db.close()
    with pytest.raises(ValueError, match="lease_ahead"):
        AnnotationDB(tmp_path / "x.sqlite", lease_ahead=3)


def test_finishing_an_image_moves_on(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    _answer_all(db, "op-1", "img-a")
    assert db.image_state("img-a").done
    assert _ids(db, "op-1") == "img-b"
    assert _ids(db, "op-2") == "img-d"  # img-a is done, img-b leased, img-c leased ahead


def test_lease_lapses_after_inactivity_and_another_operator_takes_it(
    db: AnnotationDB, clock: Clock
) -> None:
    assert _ids(db, "op-1") == "img-a"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    clock.advance(LEASE_S - 1)  # the verdict renewed the leases: still op-1's
    assert _leased(db)["img-b"] == "op-1"  # the image leased ahead too
    assert _ids(db, "op-2") == "img-c"
    clock.advance(2)  # past the renewed lease
    with pytest.raises(Conflict, match="lapsed"):
        db.verdict("op-1", "r-000002", "img-a", "img-a/stain/0", "defect")
    assert _ids(db, "op-3") == "img-a"
    grant = [r for r in db.lease_log() if r["image_id"] == "img-a"][-1]
    assert (grant["operator"], grant["previous"]) == ("op-3", "op-1")
    with pytest.raises(Conflict, match="leased to 'op-3'"):
        db.verdict("op-1", "r-000003", "img-a", "img-a/stain/0", "defect")
    # op-3 sees op-1's verdict and answers the rest
    state = db.image_state("img-a")
    assert [a.verdict for a in state.areas] == ["defect", None]
    db.verdict("op-3", "r-000004", "img-a", "img-a/stain/0", "healthy")
    assert db.image_state("img-a").done


def test_every_action_renews_the_lease(db: AnnotationDB, clock: Clock) -> None:
    assert _ids(db, "op-1") == "img-a"
    for k in range(3):
        clock.advance(LEASE_S * 0.9)
        db.verdict("op-1", f"r-renew-{k}", "img-a", "img-a/scratch/0", "defect")
    state = db.image_state("img-a")
    assert state.leased_to == "op-1" and state.lease_expires_at == clock() + LEASE_S


def test_actions_on_an_image_not_held_are_refused(db: AnnotationDB) -> None:
    with pytest.raises(Conflict, match="not leased to you"):
        db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    assert _ids(db, "op-2") == "img-a"
    for action in (
        lambda: db.verdict("op-1", "r-000002", "img-a", "img-a/scratch/0", "healthy"),
        lambda: db.change_class("op-1", "r-000003", "img-a", "img-a/scratch/0", "stain"),
        lambda: db.flag_healthy("op-1", "r-000004", "img-a"),
        lambda: db.skip("op-1", "r-000005", "img-a"),
        lambda: db.draw("op-1", "r-000006", "img-a", "stain", (0, 0, 8, 8)),
    ):
        with pytest.raises(Conflict, match="leased to 'op-2'"):
            action()
    assert db.events() == []


def test_unknown_ids_and_values_are_refused(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    with pytest.raises(NotFound, match="unknown image 'nope'"):
        db.verdict("op-1", "r-000001", "nope", "x", "defect")
    with pytest.raises(NotFound, match="unknown area 'img-b/stain/0' of image 'img-a'"):
        db.verdict("op-1", "r-000002", "img-a", "img-b/stain/0", "defect")
    with pytest.raises(AnnotateError, match="verdict 'maybe'"):
        db.verdict("op-1", "r-000003", "img-a", "img-a/scratch/0", "maybe")
    with pytest.raises(AnnotateError, match="unknown class 'dent'"):
        db.change_class("op-1", "r-000004", "img-a", "img-a/scratch/0", "dent")
    assert db.events() == []


def test_logout_releases_the_leases(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    assert db.release_all("op-1") == 2  # img-a and img-b, leased ahead
    assert _ids(db, "op-2") == "img-a"


# -- actions and state -------------------------------------------------------------------------


def test_class_change_confirms_with_the_new_class(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    res = db.change_class("op-1", "r-000001", "img-a", "img-a/scratch/0", "stain")
    a = res.image.areas[0]
    assert (a.verdict, a.cls, a.detected_class) == ("defect", "stain", "scratch")
    res = db.verdict("op-1", "r-000002", "img-a", "img-a/scratch/0", "healthy")
    assert res.image.areas[0].verdict == "healthy"
    res = db.verdict("op-1", "r-000003", "img-a", "img-a/scratch/0", "defect")
    assert (res.image.areas[0].verdict, res.image.areas[0].cls) == ("defect", "stain")
    assert res.event.previous is not None and '"verdict": "healthy"' in res.event.previous


def test_healthy_flag_rejects_the_unanswered_areas(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    with pytest.raises(Conflict, match=r"confirmed or drawn areas \['img-a/scratch/0'\]"):
        db.flag_healthy("op-1", "r-000002", "img-a")
    db.verdict("op-1", "r-000003", "img-a", "img-a/scratch/0", "healthy")
    res = db.flag_healthy("op-1", "r-000004", "img-a")
    assert res.image.done and res.image.healthy == ("op-1", res.event.at)
    assert [(a.verdict, a.implied) for a in res.image.areas] == [
        ("healthy", False),
        ("healthy", True),
    ]
    with pytest.raises(Conflict, match="flagged healthy"):
        db.verdict("op-1", "r-000005", "img-a", "img-a/stain/0", "defect")
    with pytest.raises(Conflict, match="flagged healthy"):
        db.draw("op-1", "r-000006", "img-a", "stain", (0, 0, 8, 8))
    with pytest.raises(Conflict, match="already flagged"):
        db.flag_healthy("op-1", "r-000007", "img-a")


def test_drawn_boxes_are_validated_and_get_unique_ids(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    for bbox, cls, why in [
        ((0, 0, 8, 8), "dent", "unknown class 'dent'"),
        ((8, 8, 8, 16), "stain", "is empty"),
        ((24, 24, 40, 32), "stain", r"leaves the image \(32 x 32 pixels\)"),
        ((-1, 0, 8, 8), "stain", "leaves the image"),
    ]:
        with pytest.raises(AnnotateError, match=why):
            db.draw("op-1", f"r-bad-{bbox[2]}-{cls}", "img-a", cls, bbox)
    first = db.draw("op-1", "r-000001", "img-a", "stain", (0, 16, 16, 32))
    second = db.draw("op-1", "r-000002", "img-a", "scratch", (24, 0, 32, 8))
    assert first.event.area_id == "img-a/drawn/0" and second.event.area_id == "img-a/drawn/1"
    drawn = {d.area_id: d for d in second.image.drawn}
    assert drawn["img-a/drawn/0"].cells == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert drawn["img-a/drawn/1"].cls == "scratch"
    erased = db.erase("op-1", "r-000003", "img-a", "img-a/drawn/0")
    assert [d.area_id for d in erased.image.drawn] == ["img-a/drawn/1"]
    with pytest.raises(NotFound, match="no drawn area 'img-a/drawn/0'"):
        db.erase("op-1", "r-000004", "img-a", "img-a/drawn/0")
    db.undo("op-1", "r-000005")  # the erase
    db.undo("op-1", "r-000006")  # the second box
    third = db.draw("op-1", "r-000007", "img-a", "stain", (0, 0, 8, 8))
    assert third.event.area_id == "img-a/drawn/2"  # an undone id is never given again
    assert [d.area_id for d in third.image.drawn] == ["img-a/drawn/0", "img-a/drawn/2"]


def test_done_is_for_images_without_areas(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    with pytest.raises(Conflict, match="has 2 detected areas"):
        db.finish("op-1", "r-000001", "img-a")
    db.skip("op-1", "r-000002", "img-a")
    assert _ids(db, "op-1") == "img-b"
    db.skip("op-1", "r-000003", "img-b")
    assert _ids(db, "op-1") == "img-c"
    db.draw("op-1", "r-000004", "img-c", "scratch", (0, 0, 16, 16))
    assert not db.image_state("img-c").done
    assert db.finish("op-1", "r-000005", "img-c").image.done
    assert _ids(db, "op-1") == "img-d"


def test_skipped_images_come_back_only_when_nothing_else_is_left(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    res = db.skip("op-1", "r-000001", "img-a")
    assert res.image.leased_to is None
    assert _ids(db, "op-2") == "img-a"  # released: another operator gets it (img-c ahead)
    assert _ids(db, "op-1") == "img-b"  # leased ahead: op-1's
    _answer_all(db, "op-1", "img-b")
    assert _ids(db, "op-1") == "img-d"
    _answer_all(db, "op-1", "img-d")
    assert db.next_image("op-1").image is None  # img-a, img-c are op-2's
    db.release_all("op-2")
    assert _ids(db, "op-1") == "img-c"
    db.finish("op-1", "r-000002", "img-c")
    again = db.next_image("op-1")
    assert again.image is not None and again.image.image_id == "img-a" and again.revisit


def test_undo_goes_back_across_images_and_re_leases(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    _answer_all(db, "op-1", "img-a")
    assert _ids(db, "op-1") == "img-b"
    db.change_class("op-1", "r-000001", "img-b", "img-b/stain/0", "scratch")
    assert _ids(db, "op-1") == "img-c"
    u1 = db.undo("op-1", "u-000001")
    assert u1.undone is not None and u1.undone.kind == "class" and u1.undone.undone
    assert u1.image.image_id == "img-b" and u1.image.areas[0].verdict is None
    assert u1.image.areas[0].cls == "stain" and u1.image.leased_to == "op-1"
    u2 = db.undo("op-1", "u-000002")
    assert u2.image.image_id == "img-a" and not u2.image.done
    assert [a.verdict for a in u2.image.areas] == ["defect", None]
    # the earliest image held and not done comes first
    assert _ids(db, "op-1") == "img-a"
    db.undo("op-1", "u-000003")
    with pytest.raises(Conflict, match="nothing to undo for 'op-1'"):
        db.undo("op-1", "u-000004")
    kinds = [(e.kind, e.undone) for e in db.events("op-1")]
    assert kinds == [
        ("verdict", True),
        ("verdict", True),
        ("class", True),
        ("undo", False),
        ("undo", False),
        ("undo", False),
    ]


def test_undo_is_refused_while_another_operator_holds_the_image(
    db: AnnotationDB, clock: Clock
) -> None:
    assert _ids(db, "op-1") == "img-a"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    clock.advance(LEASE_S + 1)
    assert _ids(db, "op-2") == "img-a"
    with pytest.raises(Conflict, match="leased to 'op-2'"):
        db.undo("op-1", "u-000001")
    assert not db.events("op-1")[0].undone


def test_undo_of_a_skip_and_of_a_flag(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    db.flag_healthy("op-1", "r-000001", "img-a")
    assert _ids(db, "op-1") == "img-b"
    db.skip("op-1", "r-000002", "img-b")
    back = db.undo("op-1", "u-000001")
    assert back.image.image_id == "img-b" and back.image.leased_to == "op-1"
    assert back.image.skipped_by == []
    flag = db.undo("op-1", "u-000002")
    assert not flag.image.healthy and [a.verdict for a in flag.image.areas] == [None, None]


# -- request ids -------------------------------------------------------------------------------


def test_a_retried_request_is_applied_once(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    first = db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    again = db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    assert not first.replayed and again.replayed and again.event == first.event
    u = db.undo("op-1", "u-000001")
    u_again = db.undo("op-1", "u-000001")  # not a second undo
    assert u_again.replayed and u_again.undone == u.undone
    assert [e.kind for e in db.events()] == ["verdict", "undo"]


def test_a_request_id_reused_for_another_action_is_refused(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    assert _ids(db, "op-2") == "img-c"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    with pytest.raises(Conflict, match="already used by 'op-1' for a verdict"):
        db.verdict("op-1", "r-000001", "img-a", "img-a/stain/0", "defect")
    with pytest.raises(Conflict, match="already used"):
        db.verdict("op-2", "r-000001", "img-d", "img-d/scratch/0", "defect")
    with pytest.raises(Conflict, match="already used"):
        db.skip("op-1", "r-000001", "img-a")
    # the UNIQUE constraint stands behind the check
    with pytest.raises(sqlite3.IntegrityError):
        db._conn().execute(
            "INSERT INTO events (request_id, operator, image_id, kind, at) "
            "VALUES ('r-000001', 'x', 'img-a', 'skip', 0)"
        )


# -- restart and status ------------------------------------------------------------------------


def test_a_reopened_database_continues_where_it_stopped(
    tmp_path: Path, db: AnnotationDB, clock: Clock, tasks: MiningTasks
) -> None:
    assert _ids(db, "op-1") == "img-a"
    _answer_all(db, "op-1", "img-a", "healthy")
    assert _ids(db, "op-1") == "img-b"
    db.verdict("op-1", "r-000001", "img-b", "img-b/stain/0", "defect")
    before = [s.as_dict() for s in db.states()]
    db.close()
    again = AnnotationDB(tmp_path / "annotate.sqlite", lease_s=LEASE_S, clock=clock)
    assert again.load_tasks(tasks, "a" * 64, "tasks.json") is False
    assert [s.as_dict() for s in again.states()] == before
    assert again.refold() == []  # the cached state agrees with the event log
    assert _ids(again, "op-1") == "img-c"  # img-b was finished, the lease survived
    again.close()


def test_refold_repairs_a_cache_that_disagrees(db: AnnotationDB) -> None:
    assert _ids(db, "op-1") == "img-a"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    db._conn().execute("UPDATE areas SET verdict = NULL")
    assert db.refold() == ["img-a"]
    assert db.refold() == []


def test_status_counts_per_operator(db: AnnotationDB, clock: Clock) -> None:
    assert _ids(db, "op-1") == "img-a"
    assert _ids(db, "op-2") == "img-c"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    clock.advance(30)
    db.verdict("op-1", "r-000002", "img-a", "img-a/stain/0", "healthy")
    db.draw("op-2", "r-000003", "img-c", "stain", (0, 0, 8, 8))
    s = db.status()
    assert s["images"] == {"total": 4, "done": 1, "left": 3}
    assert s["areas"] == {"total": 5, "done": 2, "left": 3, "drawn": 1}
    ops = {o["operator"]: o for o in s["operators"]}
    assert (ops["op-1"]["areas"], ops["op-1"]["images"], ops["op-1"]["drawn"]) == (2, 1, 0)
    assert ops["op-1"]["areas_per_minute"] == 4.0  # 2 areas since 30 s ago
    assert (ops["op-2"]["areas"], ops["op-2"]["images"], ops["op-2"]["drawn"]) == (0, 1, 1)
    # the images being worked on, those leased ahead included (every action renews them)
    assert s["leases"] == [
        {"image_id": i, "operator": o, "expires_at": clock() + LEASE_S}
        for i, o in (("img-b", "op-1"), ("img-c", "op-2"), ("img-d", "op-2"))
    ]


# -- the camera original -----------------------------------------------------------------------


def _with_original(tasks: MiningTasks) -> MiningTasks:
    """img-a ingested from a 2048 x 2048 camera image (the 32 px image is 64x smaller)."""
    a = tasks.images[0]
    areas = [x.model_copy(update={"orig_bbox": tuple(64 * v for v in x.bbox)}) for x in a.areas]
    a = a.model_copy(
        update={"orig_size": (2048, 2048), "source_uri": "s3://line/cam/0001.png", "areas": areas}
    )
    return tasks.model_copy(update={"images": [a, *tasks.images[1:]]})


def test_the_original_size_source_and_boxes_are_kept(tmp_path: Path, clock: Clock) -> None:
    db = AnnotationDB(tmp_path / "o.sqlite", lease_s=LEASE_S, clock=clock)
    try:
        db.load_tasks(_with_original(small_tasks()), "a" * 64, "tasks.json")
        res = db.next_image("op-1")
        assert res.image is not None
        image = res.image.as_dict()
        assert image["orig_size"] == [2048, 2048]
        assert image["source_uri"] == "s3://line/cam/0001.png"
        assert [a["orig_bbox"] for a in image["areas"]] == [
            [0, 0, 512, 512],
            [1024, 1024, 2048, 1536],
        ]
        synthetic = res.following[0].as_dict()  # img-b: no original
        assert synthetic["orig_size"] is None and synthetic["source_uri"] == ""
        assert synthetic["areas"][0]["orig_bbox"] is None
    finally:
        db.close()


def test_a_database_of_the_previous_layout_opens(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.sqlite"
    db = AnnotationDB(path, lease_s=LEASE_S, clock=clock)
    db.load_tasks(small_tasks(), "a" * 64, "tasks.json")
    assert _ids(db, "op-1") == "img-a"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0", "defect")
    conn = db._conn()  # back to the layout before the original's columns
    for table, column in (
        ("images", "orig_w"),
        ("images", "orig_h"),
        ("images", "source_uri"),
        ("areas", "orig_bbox"),
    ):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.close()
    again = AnnotationDB(path, lease_s=LEASE_S, clock=clock)
    try:
        state = again.image_state("img-a")
        assert state.areas[0].verdict == "defect" and state.orig_size is None
        assert state.source_uri == "" and state.areas[0].orig_bbox is None
        assert again.refold() == []
    finally:
        again.close()
