"""Guidance gradient vs the closed form of a linear multi-label classifier, and its contract."""

import torch

from augment.guidance import classifier_guidance, log_prob_present, prob_present
from tests.support import LinearClassifier, tiny_noisy_classifier


def test_cond_fn_matches_closed_form_gradient_times_scale():
    classifier = LinearClassifier(4, (3, 8, 8))
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, 3, 1])
    t = torch.full((5,), 300)
    got = classifier_guidance(classifier, scale=2.5)(x, t, target)
    torch.testing.assert_close(got, 2.5 * classifier.closed_form_grad(x, target), rtol=1e-5, atol=1e-7)


def test_cond_fn_works_under_no_grad_in_fp32_and_leaves_input_alone():
    classifier = LinearClassifier(2, (3, 4, 4))
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        grad = classifier_guidance(classifier, scale=1.0)(x, torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 0]))
    assert grad.dtype == torch.float32 and grad.grad_fn is None and not x.requires_grad
    assert grad.abs().sum() > 0
    assert classifier.weight.grad is None  # only x is differentiated


def test_scale_zero_gives_zero_and_prob_present_is_sigmoid_of_target_logit():
    classifier = LinearClassifier(3, (3, 4, 4))
    x, target = torch.randn(2, 3, 4, 4), torch.tensor([2, 0])
    assert torch.count_nonzero(classifier_guidance(classifier, 0.0)(x, torch.zeros(2, dtype=torch.long), target)) == 0
    logits = classifier(x, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(prob_present(classifier, x, target), torch.sigmoid(logits[[0, 1], target]))


def test_real_classifier_gradient_is_nonzero_and_ascends_log_prob():
    classifier = tiny_noisy_classifier()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    t, target = torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, 0])
    grad = classifier_guidance(classifier, scale=1.0)(x, t, target)
    assert grad.shape == x.shape and torch.all(grad.flatten(1).norm(dim=1) > 0)
    direction = grad / grad.flatten(1).norm(dim=1)[:, None, None, None]
    with torch.no_grad():
        before = log_prob_present(classifier, x, t, target)
        after = log_prob_present(classifier, x + 1e-2 * direction, t, target)
    assert torch.all(after > before)
