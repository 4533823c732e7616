import pytest

import kerasseg
from kerasseg.registry import register_model


def test_list_models_contains_erfnet_and_filters():
    names = kerasseg.list_models()
    assert "erfnet" in names
    assert names == sorted(names)
    assert kerasseg.list_models("erf*") == ["erfnet"]
    assert kerasseg.list_models("nothing-matches-*") == []


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError) as e:
        kerasseg.build_model("erfnett", num_classes=3)
    msg = str(e.value)
    assert "erfnett" in msg and "erfnet" in msg and "Expected one of" in msg


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        @register_model("erfnet")
        def another(num_classes, input_shape=(8, 8, 3)):
            return None


def test_unexpected_kwargs_are_an_error():
    with pytest.raises(TypeError, match="unexpected keyword argument.*'drop_out'"):
        kerasseg.build_model("erfnet", num_classes=3, input_shape=(32, 32, 3), drop_out=0.1)


def test_build_model_attaches_metadata():
    model = kerasseg.build_model("erfnet", num_classes=4, input_shape=(32, 64, 3))
    meta = model.kerasseg_metadata
    assert meta.model_name == "erfnet"
    assert meta.num_classes == 4
    assert meta.input_shape == [32, 64, 3]
    assert len(meta.mean) == len(meta.std) == 3


def test_model_info_has_paper():
    info = kerasseg.get_model_info("erfnet")
    assert "Romera" in info.paper
    assert info.default_input_shape == (512, 1024, 3)


def test_registry_imports_no_architecture_and_the_factory_completes_it():
    # The registry is the table only; the factory imports the architectures that fill it.
    import subprocess
    import sys

    code = ("import sys, kerasseg, kerasseg.registry as r; assert 'kerasseg.models' not in sys.modules; "
            "assert r.registered_models() == {}; from kerasseg.models.factory import list_models; "
            "assert 'erfnet' in list_models() and 'erfnet' in r.registered_models(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
