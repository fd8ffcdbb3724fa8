from quantship.rollout.assign import CONTROL, TREATMENT, assign, bucket

USERS = [f"user-{i}" for i in range(5000)]


def test_assignment_is_stable_for_a_user():
    assert [assign("exp", u, 0.3) for u in USERS[:200]] == [assign("exp", u, 0.3) for u in USERS[:200]]


def test_raising_the_fraction_only_moves_control_users_into_treatment():
    previous = {u: assign("exp", u, 0.0) for u in USERS}
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        current = {u: assign("exp", u, fraction) for u in USERS}
        assert not [u for u in USERS if previous[u] == TREATMENT and current[u] == CONTROL]
        share = sum(v == TREATMENT for v in current.values()) / len(USERS)
        assert abs(share - fraction) < 0.03
        previous = current


def test_a_new_experiment_reshuffles_users():
    a = [bucket("exp-a", u) < 0.5 for u in USERS]
    b = [bucket("exp-b", u) < 0.5 for u in USERS]
    agreement = sum(x == y for x, y in zip(a, b, strict=True)) / len(USERS)
    assert 0.45 < agreement < 0.55  # independent, not the same split


def test_bucket_is_the_documented_sha256_mapping():
    import hashlib

    digest = hashlib.sha256(b"exp:alice").digest()
    assert bucket("exp", "alice") == int.from_bytes(digest[:8], "big") / 2**64
