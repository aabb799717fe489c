"""Variant selection rules (pure logic, no GPU/LLVM needed) and refusal of non-polarized variants."""
import sys

import pytest

from polar_render.mitsuba import variants
from polar_render.mitsuba.variants import VariantError, activate, choose_variant


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv("POLAR_RENDER_VARIANT", raising=False)


def test_cuda_visible_prefers_cuda():
    assert choose_variant("auto", cuda=True, libllvm="/usr/lib/libLLVM-19.so") == "cuda_ad_spectral_polarized"
    assert choose_variant("auto", cuda=True, libllvm=None) == "cuda_ad_spectral_polarized"


def test_no_cuda_with_libllvm_uses_llvm():
    assert choose_variant("auto", cuda=False, libllvm="/usr/lib/libLLVM-19.so") == "llvm_ad_spectral_polarized"


def test_neither_falls_back_to_scalar():
    assert choose_variant("auto", cuda=False, libllvm=None) == "scalar_spectral_polarized"
    assert choose_variant(None, cuda=False, libllvm=None) == "scalar_spectral_polarized"


def test_probes_are_used_when_not_given(monkeypatch):
    monkeypatch.setattr(variants, "cuda_visible", lambda: False)
    monkeypatch.setattr(variants, "find_libllvm", lambda: "/opt/libLLVM-19.so")
    assert choose_variant() == "llvm_ad_spectral_polarized"
    monkeypatch.setattr(variants, "find_libllvm", lambda: None)
    assert choose_variant() == "scalar_spectral_polarized"
    monkeypatch.setattr(variants, "cuda_visible", lambda: True)
    assert choose_variant() == "cuda_ad_spectral_polarized"


def test_cuda_visible_respects_hidden_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert variants.cuda_visible() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert variants.cuda_visible() is False


def test_explicit_request_wins_over_probes():
    assert choose_variant("scalar_spectral_polarized", cuda=True, libllvm="/x.so") == "scalar_spectral_polarized"
    assert choose_variant("llvm_ad_mono_polarized", cuda=False, libllvm=None) == "llvm_ad_mono_polarized"


def test_env_overrides_explicit_request_and_probes(monkeypatch):
    monkeypatch.setenv("POLAR_RENDER_VARIANT", "scalar_mono_polarized")
    assert choose_variant("auto", cuda=True, libllvm="/x.so") == "scalar_mono_polarized"
    assert choose_variant("llvm_ad_spectral_polarized", cuda=False, libllvm=None) == "scalar_mono_polarized"


def test_empty_env_does_not_override(monkeypatch):
    monkeypatch.setenv("POLAR_RENDER_VARIANT", "")
    assert choose_variant("auto", cuda=False, libllvm=None) == "scalar_spectral_polarized"


def test_activate_refuses_non_polarized_without_importing_mitsuba(monkeypatch):
    # A fake libLLVM path keeps the check independent of this machine; the refusal must come
    # before `import mitsuba`, so a poisoned module entry proves mitsuba is never loaded.
    monkeypatch.setattr(variants, "find_libllvm", lambda: "/fake/libLLVM-19.so")
    monkeypatch.delenv("DRJIT_LIBLLVM_PATH", raising=False)
    monkeypatch.setitem(sys.modules, "mitsuba", None)
    with pytest.raises(VariantError, match="polarized"):
        activate("llvm_ad_rgb")
    with pytest.raises(VariantError, match="polarized"):
        activate("scalar_rgb")


def test_activate_refuses_env_selected_non_polarized(monkeypatch):
    monkeypatch.setitem(sys.modules, "mitsuba", None)
    monkeypatch.setenv("POLAR_RENDER_VARIANT", "scalar_spectral")
    with pytest.raises(VariantError, match="polarized"):
        activate("auto")


def test_mono_sensor_auto_selects_mono_variant():
    """A monochrome sensor renders with a *_mono_polarized variant, same cuda > llvm > scalar order."""
    assert choose_variant("auto", cuda=True, libllvm="/x.so", mono=True) == "cuda_ad_mono_polarized"
    assert choose_variant("auto", cuda=False, libllvm="/x.so", mono=True) == "llvm_ad_mono_polarized"
    assert choose_variant("auto", cuda=False, libllvm=None, mono=True) == "scalar_mono_polarized"
    assert choose_variant(None, cuda=False, libllvm=None, mono=True) == "scalar_mono_polarized"
    # an explicit request or the environment still wins
    assert choose_variant("llvm_ad_spectral_polarized", cuda=False, libllvm="/x.so", mono=True) \
        == "llvm_ad_spectral_polarized"


def test_mono_env_override(monkeypatch):
    monkeypatch.setenv("POLAR_RENDER_VARIANT", "scalar_spectral_polarized")
    assert choose_variant("auto", cuda=True, libllvm="/x.so", mono=True) == "scalar_spectral_polarized"

