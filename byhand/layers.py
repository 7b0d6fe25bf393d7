"""Neural-network layers in plain numpy, each with a hand-written backward pass (no torch in this file).

Every layer has `forward(x)`, which keeps what its backward needs, and `backward(grad_out)`, which returns
the gradient with respect to its input and stores the gradients of its parameters in `layer.grads` (same
keys as `layer.params`). Shapes follow PyTorch's: images are [N, C, H, W], conv weights [out, in, k, k];
Linear keeps its weight as [in, out] so that forward is x @ W + b. Parameters take the dtype they are
created with: float64 for gradient checks, float32 for training.

    net = Sequential(Linear(784, 256, rng), ReLU(), Linear(256, 10, rng))
    loss_fn, opt = SoftmaxCrossEntropy(), SGD(net, lr=0.05, momentum=0.9)
    loss = loss_fn.forward(net.forward(x), y); net.backward(loss_fn.backward()); opt.step()
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def uniform_init(rng, shape, fan_in, dtype):
    """PyTorch's default for Linear and Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Layer:
    params = {}  # name -> array; layers without parameters share this empty dict

    def __init__(self):
        self.grads = {}


class Linear(Layer):
    def __init__(self, in_features, out_features, rng, dtype=np.float32):
        super().__init__()
        self.params = {"weight": uniform_init(rng, (in_features, out_features), in_features, dtype),
                       "bias": uniform_init(rng, (out_features,), in_features, dtype)}

    def forward(self, x):
        self.x = x
        return x @ self.params["weight"] + self.params["bias"]

    def backward(self, grad):
        self.grads = {"weight": self.x.T @ grad, "bias": grad.sum(0)}
        return grad @ self.params["weight"].T


class ReLU(Layer):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad):
        return grad * self.mask  # slope 0 at x = 0, as in torch


class Sigmoid(Layer):
    def forward(self, x):
        # exp of a negative number only: no overflow warning for large |x|
        e = np.exp(-np.abs(x))
        self.out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self.out

    def backward(self, grad):
        return grad * self.out * (1 - self.out)


class Tanh(Layer):
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out ** 2)


class Flatten(Layer):
    def forward(self, x):
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad):
        return grad.reshape(self.shape)


def windows(x, k, stride):
    """[N, C, H, W] -> view [N, C, Ho, Wo, k, k] of every k x k window at the given stride (no copy)."""
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def im2col(x, k, stride, padding):
    """[N, C, H, W] -> ([N*Ho*Wo, C*k*k] one row per output position, Ho, Wo): a convolution becomes one
    matrix multiply. The copy costs k*k times the input's memory; the multiply is what a BLAS does fastest."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    w = windows(x, k, stride)
    n, c, ho, wo = w.shape[:4]
    return w.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k), ho, wo


def col2im(cols, x_shape, k, stride, padding, ho, wo):
    """The adjoint of im2col: add each row's k*k*C values back where they came from (overlaps add up)."""
    n, c, h, w = x_shape
    cols = cols.reshape(n, ho, wo, c, k, k).transpose(0, 3, 4, 5, 1, 2)  # [N, C, k, k, Ho, Wo]
    out = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for i in range(k):  # k*k strided adds instead of a Python loop over every output position
        for j in range(k):
            out[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += cols[:, :, i, j]
    return out[:, :, padding:padding + h, padding:padding + w]


class Conv2d(Layer):
    def __init__(self, in_channels, out_channels, kernel_size, rng, stride=1, padding=0, dtype=np.float32):
        super().__init__()
        fan_in = in_channels * kernel_size ** 2
        self.k, self.stride, self.padding = kernel_size, stride, padding
        self.params = {"weight": uniform_init(rng, (out_channels, in_channels, kernel_size, kernel_size), fan_in,
                                              dtype),
                       "bias": uniform_init(rng, (out_channels,), fan_in, dtype)}

    def forward(self, x):
        self.x_shape = x.shape
        self.cols, self.ho, self.wo = im2col(x, self.k, self.stride, self.padding)
        w = self.params["weight"]
        out = self.cols @ w.reshape(len(w), -1).T + self.params["bias"]  # [N*Ho*Wo, out]
        return out.reshape(x.shape[0], self.ho, self.wo, len(w)).transpose(0, 3, 1, 2)

    def backward(self, grad):
        w = self.params["weight"]
        g = grad.transpose(0, 2, 3, 1).reshape(-1, len(w))  # [N*Ho*Wo, out], rows as in self.cols
        self.grads = {"weight": (g.T @ self.cols).reshape(w.shape), "bias": g.sum(0)}
        return col2im(g @ w.reshape(len(w), -1), self.x_shape, self.k, self.stride, self.padding, self.ho, self.wo)


class MaxPool2d(Layer):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.k, self.stride = kernel_size, stride or kernel_size

    def forward(self, x):
        self.x_shape = x.shape
        w = windows(x, self.k, self.stride)
        w = w.reshape(*w.shape[:4], -1)
        self.argmax = w.argmax(-1)  # the first maximum on ties, as torch
        return np.take_along_axis(w, self.argmax[..., None], -1)[..., 0]

    def backward(self, grad):
        """The gradient goes to the input that was the maximum of its window, nowhere else."""
        k, s = self.k, self.stride
        ho, wo = grad.shape[2:]
        out = np.zeros(self.x_shape, dtype=grad.dtype)
        for i in range(k):
            for j in range(k):
                out[:, :, i:i + s * ho:s, j:j + s * wo:s] += grad * (self.argmax == i * k + j)
        return out


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels; its backward is (softmax - onehot) / N,
    computed together because the two Jacobians multiplied out are that simple (and stable)."""

    def forward(self, logits, labels):
        shifted = logits - logits.max(1, keepdims=True)  # exp never overflows; softmax is unchanged
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        self.probs, self.labels = np.exp(log_probs), labels
        return -log_probs[np.arange(len(labels)), labels].mean()

    def backward(self):
        grad = self.probs.copy()
        grad[np.arange(len(self.labels)), self.labels] -= 1
        return grad / len(self.labels)


class Sequential:
    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def parameters(self):
        """(layer, name) pairs: layer.params[name] is the array, layer.grads[name] its gradient."""
        return [(layer, name) for layer in self.layers for name in layer.params]


class SGD:
    """PyTorch's SGD: velocity = momentum * velocity + grad; param -= lr * velocity (no dampening)."""

    def __init__(self, net, lr, momentum=0.0):
        self.net, self.lr, self.momentum = net, lr, momentum
        self.velocity = {}

    def step(self):
        for layer, name in self.net.parameters():
            key = (id(layer), name)
            v = self.velocity.get(key)
            g = layer.grads[name]
            v = g.copy() if v is None else self.momentum * v + g  # torch starts the velocity at the first grad
            self.velocity[key] = v
            layer.params[name] -= self.lr * v
