"""The public API is exactly what `allmende.__all__` names; errors keep their builtin bases."""

from __future__ import annotations

import allmende
from allmende import errors


def test_all_names_exist_and_nothing_else_is_public_by_accident() -> None:
    for name in allmende.__all__:
        assert hasattr(allmende, name), f"allmende.__all__ names {name!r}, which is missing"
    public = {n for n in vars(allmende) if not n.startswith("_")}
    subpackages = {"errors", "chain", "net", "store", "learn", "node", "cli", "privacy",
                   "verify"}
    assert public - subpackages <= set(allmende.__all__)


def test_task_is_the_task_api_base_class() -> None:
    from allmende.learn.digits import DigitsMLP
    from allmende.learn.task import Task

    assert "Task" in allmende.__all__
    assert allmende.Task is Task
    assert isinstance(DigitsMLP(), allmende.Task)


def test_unknown_attributes_are_still_missing() -> None:
    assert not hasattr(allmende, "NoSuchThing")


def test_every_error_derives_from_the_base_and_a_builtin() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not errors.AllmendeError
    ]
    assert classes, "errors.py defines no error classes"
    for cls in classes:
        assert issubclass(cls, errors.AllmendeError), cls
        builtin_bases = [b for b in cls.__mro__ if b.__module__ == "builtins" and b is not object]
        assert any(b not in (Exception, BaseException) for b in builtin_bases), cls


def test_contract_revert_carries_the_contracts_reason() -> None:
    exc = errors.ContractRevert("jobs: round is final", function="propose")
    assert exc.reason == "jobs: round is final"
    assert "propose" in str(exc) and "jobs: round is final" in str(exc)
    assert isinstance(exc, RuntimeError)


def test_the_chain_package_names_resolve_on_first_use() -> None:
    import allmende.chain as chain

    assert sorted(chain.__all__) == sorted(chain._MODULE_OF)  # one list of what is lazy
    for name in chain.__all__:
        value = getattr(chain, name)
        module = f"allmende.chain.{chain._MODULE_OF[name]}"
        assert getattr(__import__(module, fromlist=[name]), name) is value, name
    assert not hasattr(chain, "NoSuchThing")


def test_every_public_error_is_exported_and_drawn_in_the_tree() -> None:
    doc = errors.__doc__ or ""
    for name, obj in vars(errors).items():
        if isinstance(obj, type) and issubclass(obj, errors.AllmendeError):
            assert name in allmende.__all__, f"{name} is not exported from allmende"
            assert getattr(allmende, name) is obj
            assert f" {name}" in doc, f"{name} is missing from the tree in errors.py's docstring"


def test_the_privacy_package_names_resolve_on_first_use() -> None:
    import allmende.privacy as privacy

    assert sorted(privacy.__all__) == sorted(privacy._MODULE_OF)
    for name in privacy.__all__:
        value = getattr(privacy, name)
        module = f"allmende.privacy.{privacy._MODULE_OF[name]}"
        assert getattr(__import__(module, fromlist=[name]), name) is value, name
    assert not hasattr(privacy, "NoSuchThing")
