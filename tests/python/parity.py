"""What the Python tests compare a compiled module with eager autograd by
(pytest puts this folder on sys.path for the tests beside it)."""


def max_rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def assert_grads_match(model, eager, tol=1e-5):
    """Every parameter of `model` (the original the compiled module shares)
    has a gradient within `tol` of the same parameter's in `eager`."""
    params = dict(eager.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert max_rel(p.grad, params[name].grad) <= tol, name
