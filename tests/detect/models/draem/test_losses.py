"""DRÆM training loss (polar_detect.models.draem.losses): paper eq. 1-3."""
import pytest
import torch

from polar_detect.models.draem.losses import draem_loss, reconstruction_loss, segmentation_loss


def test_ssim_and_l2_vanish_for_identical_images_only():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g)
    l2, ssim = reconstruction_loss(img, img.clone())
    assert float(l2) == 0.0 and float(ssim) == pytest.approx(0.0, abs=1e-5)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    l2n, ssimn = reconstruction_loss(noisy, img)
    assert float(l2n) == pytest.approx(float(((noisy - img) ** 2).mean()), rel=1e-6)
    assert 0.1 < float(ssimn) <= 2.0                  # 1 - SSIM (not kornia's (1 - SSIM) / 2)


def test_ssim_range_follows_max_val():
    """Signed modalities (AoLP, normals in [-1, 1]) use max_val 2: the same structural error
    scaled by 2 gives the same 1 - SSIM only with max_val doubled (SSIM is scale-invariant
    when its constants scale with the range)."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 2, 32, 32, generator=g), torch.rand(1, 2, 32, 32, generator=g)
    _, s1 = reconstruction_loss(a, b, max_val=1.0)
    _, s2 = reconstruction_loss(2 * a, 2 * b, max_val=2.0)
    _, wrong = reconstruction_loss(2 * a, 2 * b, max_val=1.0)
    assert float(s2) == pytest.approx(float(s1), rel=1e-4)
    assert abs(float(wrong) - float(s1)) > 1e-3


def test_focal_loss_down_weights_easy_pixels():
    """gamma = 2 against gamma = 0 (plain cross-entropy, same reduction): a confidently right
    pixel keeps (1 - p)^2 of its loss (0.01 at p = 0.9), a badly classified one most of it
    (0.49 at p = 0.3)."""
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    target = mask[:, 0].long()

    def logits_for(p_right):                         # p(correct class) = p_right at every pixel
        z = torch.log(torch.tensor(p_right) / (1 - torch.tensor(p_right)))
        right = torch.where(target.bool(), z, -z)    # class-1 logit minus class-0 logit
        return torch.stack([torch.zeros_like(right, dtype=torch.float), right.float()], dim=1)

    ratio = {}
    for p in (0.9, 0.3):
        focal = float(segmentation_loss(logits_for(p), mask))
        bce = float(segmentation_loss(logits_for(p), mask, gamma=0.0))
        ratio[p] = focal / bce
        assert ratio[p] == pytest.approx((1 - p) ** 2, rel=1e-4)
    assert ratio[0.9] < 0.02 and ratio[0.3] > 0.45


def test_total_is_the_sum_of_the_terms():
    g = torch.Generator().manual_seed(2)
    img, rec = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    logits = torch.randn(2, 2, 32, 32, generator=g)
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.8).float()
    d = draem_loss(rec, logits, img, mask)
    l2, ssim = reconstruction_loss(rec, img)
    assert torch.equal(d["l2"], l2) and torch.equal(d["ssim"], ssim)
    assert torch.equal(d["focal"], segmentation_loss(logits, mask))
    assert float(d["total"]) == pytest.approx(float(l2 + ssim + d["focal"]), rel=1e-6)


def test_focal_loss_is_the_per_pixel_mean_of_the_reference_formula():
    """``-(1 - p_t)^2 log p_t`` averaged over pixels (DRAEM reference), not also over the two
    classes (kornia's ``reduction="mean"`` halves it)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 9, generator=g)
    mask = (torch.rand(2, 1, 8, 9, generator=g) > 0.7).float()
    p_t = logits.softmax(1).gather(1, mask.long())[:, 0]
    want = ((1 - p_t) ** 2 * -p_t.log()).mean()
    assert torch.allclose(segmentation_loss(logits, mask), want, rtol=1e-5)
