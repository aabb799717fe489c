"""Feature sources of the ensemble (polar_detect.models.ensemble.sources): the PatchCore and DRÆM sources are those models' own distances / encoder features."""
import torch



def test_patchcore_source_is_the_patchcore_distance(tiny):
    """The PatchCore channel equals PatchCore's own nearest-neighbour distances (``center="none"``),
    minus each image's median distance by default."""
    from polar_detect.models.ensemble.sources import PatchCoreSource
    from polar_detect.models.patchcore import load_model
    data, _, pc = tiny
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    model = load_model(pc)
    f = model.patch_features(model.encode(x))
    q = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    want = torch.cdist(q.double(), model.memory.double()).min(1).values.float().reshape(2, 1, *f.shape[-2:])
    tol = 3e-5 * float(want.abs().max())            # float32 |a|^2 + |b|^2 - 2ab vs exact float64
    with torch.no_grad():
        assert torch.allclose(PatchCoreSource.from_model_file(pc, center="none")(x), want, atol=tol)
        med = want.flatten(1).median(1).values.view(2, 1, 1, 1)
        assert torch.allclose(PatchCoreSource.from_model_file(pc)(x), want - med, atol=tol)


def test_draem_source_is_the_draem_encoder(tiny):
    from polar_detect.models.draem.polar import PolarDRAEM
    from polar_detect.models.ensemble.sources import DraemSource
    data, draem, _ = tiny
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    src = DraemSource.from_model_dir(draem, "intensity", "s16")
    net = PolarDRAEM.load(draem, "cpu", ["intensity"]).models["intensity"].eval()
    xs = torch.nn.functional.interpolate(x, size=src.size, mode="bilinear", align_corners=False)  # scale 1, offset 0
    with torch.no_grad():
        assert torch.equal(src(x), net.reconstructive.encoder(xs))
