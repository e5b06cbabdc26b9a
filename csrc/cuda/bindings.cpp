// pybind11 module sed_kernels._cuda: the CUDA kernels on raw device pointers.
//
// Tensors arrive as addresses (tensor.data_ptr()), the stream as the integer handle
// torch.cuda.current_stream().cuda_stream, the device as its index; the module links the
// static CUDA runtime and never libtorch. Kernel errors arrive as std::runtime_error, which
// pybind11 raises as RuntimeError with the CUDA error name and message.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../common/pointers.h"
#include "launchers.h"

namespace py = pybind11;
using namespace sed_cuda;

namespace {

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::float32;
  if (name == "float16") return DType::float16;
  if (name == "bfloat16") return DType::bfloat16;
  if (name == "float64") return DType::float64;
  throw py::value_error("sed_kernels._cuda: dtype must be float32, float16, bfloat16 or float64, got '" +
                        name + "'");
}

using sed_bindings::ptr;
constexpr auto steps = sed_bindings::strided_steps<StridedSteps>;

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() =
      "CUDA kernels of sed_kernels' time and feature attention on raw device pointers. "
      "Use the launchers in sed_kernels.cuda, not these functions directly.";

  m.def(
      "time_attention_workspace",
      [](int64_t batch, int64_t steps_, int64_t hidden, const std::string& dtype) {
        return time_attention_workspace(batch, steps_, hidden, parse_dtype(dtype));
      },
      py::arg("batch"), py::arg("steps"), py::arg("hidden"), py::arg("dtype"),
      "Elements (accumulator dtype) of the time-attention workspace.");
  m.def(
      "feature_attention_forward_workspace",
      [](int64_t batch, int64_t steps_, int64_t hidden) {
        return feature_attention_forward_workspace(batch, steps_, hidden);
      },
      py::arg("batch"), py::arg("steps"), py::arg("hidden"));
  m.def(
      "feature_attention_backward_workspace",
      [](int64_t batch, int64_t steps_, int64_t hidden, int64_t attention, const std::string& dtype) {
        return feature_attention_backward_workspace(batch, steps_, hidden, attention,
                                                    parse_dtype(dtype));
      },
      py::arg("batch"), py::arg("steps"), py::arg("hidden"), py::arg("attention"),
      py::arg("dtype"), "Elements of the (zero-filled) feature-attention backward workspace.");

  m.def(
      "time_attention_forward",
      [](std::uintptr_t h, int64_t stride_b, int64_t stride_t, int64_t stride_h, std::uintptr_t q,
         std::uintptr_t lengths, std::uintptr_t out, std::uintptr_t lse, std::uintptr_t workspace,
         int64_t batch, int64_t steps_, int64_t hidden, const std::string& dtype, int device,
         std::uintptr_t stream) {
        const DType type = parse_dtype(dtype);
        py::gil_scoped_release release;
        time_attention_forward(type, steps(h, stride_b, stride_t, stride_h), ptr<const void*>(q),
                               ptr<const int64_t*>(lengths), ptr<void*>(out), ptr<void*>(lse),
                               ptr<void*>(workspace), batch, steps_, hidden, Launch{device, stream});
      },
      py::arg("h"), py::arg("stride_b"), py::arg("stride_t"), py::arg("stride_h"), py::arg("q"),
      py::arg("lengths"), py::arg("out"), py::arg("lse"), py::arg("workspace"), py::arg("batch"),
      py::arg("steps"), py::arg("hidden"), py::arg("dtype"), py::arg("device"), py::arg("stream"));

  m.def(
      "time_attention_backward",
      [](std::uintptr_t grad_out, std::uintptr_t h, int64_t stride_b, int64_t stride_t,
         int64_t stride_h, std::uintptr_t q, std::uintptr_t lengths, std::uintptr_t out,
         std::uintptr_t lse, std::uintptr_t grad_h, std::uintptr_t grad_q, std::uintptr_t workspace,
         int64_t batch, int64_t steps_, int64_t hidden, const std::string& dtype, int device,
         std::uintptr_t stream) {
        const DType type = parse_dtype(dtype);
        py::gil_scoped_release release;
        time_attention_backward(type, ptr<const void*>(grad_out),
                                steps(h, stride_b, stride_t, stride_h), ptr<const void*>(q),
                                ptr<const int64_t*>(lengths), ptr<const void*>(out),
                                ptr<const void*>(lse), ptr<void*>(grad_h), ptr<void*>(grad_q),
                                ptr<void*>(workspace), batch, steps_, hidden, Launch{device, stream});
      },
      py::arg("grad_out"), py::arg("h"), py::arg("stride_b"), py::arg("stride_t"),
      py::arg("stride_h"), py::arg("q"), py::arg("lengths"), py::arg("out"), py::arg("lse"),
      py::arg("grad_h"), py::arg("grad_q"), py::arg("workspace"), py::arg("batch"),
      py::arg("steps"), py::arg("hidden"), py::arg("dtype"), py::arg("device"), py::arg("stream"));

  m.def(
      "feature_attention_forward",
      [](std::uintptr_t h, int64_t stride_b, int64_t stride_t, int64_t stride_h, std::uintptr_t W_t,
         std::uintptr_t V_t, std::uintptr_t lengths, std::uintptr_t out, std::uintptr_t workspace,
         int64_t batch, int64_t steps_, int64_t hidden, int64_t attention, const std::string& dtype,
         int device, std::uintptr_t stream, bool tf32) {
        const DType type = parse_dtype(dtype);
        py::gil_scoped_release release;
        feature_attention_forward(type, steps(h, stride_b, stride_t, stride_h), ptr<const void*>(W_t),
                                  ptr<const void*>(V_t), ptr<const int64_t*>(lengths),
                                  ptr<void*>(out), ptr<void*>(workspace), batch, steps_, hidden,
                                  attention, tf32, Launch{device, stream});
      },
      py::arg("h"), py::arg("stride_b"), py::arg("stride_t"), py::arg("stride_h"), py::arg("W_t"),
      py::arg("V_t"), py::arg("lengths"), py::arg("out"), py::arg("workspace"), py::arg("batch"),
      py::arg("steps"), py::arg("hidden"), py::arg("attention"), py::arg("dtype"),
      py::arg("device"), py::arg("stream"), py::arg("tf32") = false);

  m.def(
      "feature_attention_backward",
      [](std::uintptr_t grad_out, std::uintptr_t h, int64_t stride_b, int64_t stride_t,
         int64_t stride_h, std::uintptr_t W, std::uintptr_t V, std::uintptr_t W_t,
         std::uintptr_t V_t, std::uintptr_t lengths, std::uintptr_t grad_h, std::uintptr_t grad_W,
         std::uintptr_t grad_V, std::uintptr_t workspace, int64_t batch, int64_t steps_,
         int64_t hidden, int64_t attention, const std::string& dtype, int device,
         std::uintptr_t stream, bool tf32) {
        const DType type = parse_dtype(dtype);
        py::gil_scoped_release release;
        feature_attention_backward(
            type, ptr<const void*>(grad_out), steps(h, stride_b, stride_t, stride_h),
            ptr<const void*>(W), ptr<const void*>(V), ptr<const void*>(W_t), ptr<const void*>(V_t),
            ptr<const int64_t*>(lengths), ptr<void*>(grad_h), ptr<void*>(grad_W), ptr<void*>(grad_V),
            ptr<void*>(workspace), batch, steps_, hidden, attention, tf32, Launch{device, stream});
      },
      py::arg("grad_out"), py::arg("h"), py::arg("stride_b"), py::arg("stride_t"),
      py::arg("stride_h"), py::arg("W"), py::arg("V"), py::arg("W_t"), py::arg("V_t"),
      py::arg("lengths"), py::arg("grad_h"), py::arg("grad_W"), py::arg("grad_V"),
      py::arg("workspace"), py::arg("batch"), py::arg("steps"), py::arg("hidden"),
      py::arg("attention"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::arg("tf32") = false);
}
