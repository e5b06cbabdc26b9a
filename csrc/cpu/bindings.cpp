// pybind11 module sed_kernels._cpu: the CPU kernels on raw pointers.
//
// Every tensor argument is an address (Python passes tensor.data_ptr()) and every size and
// stride an integer, so this module never links libtorch. The Python launchers in
// sed_kernels/cpu/ own dtype conversion and allocation; this file picks the instruction set,
// checks the compute dtype name and releases the GIL while a kernel runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/pointers.h"
#include "kernels.h"

namespace py = pybind11;
using namespace sed_cpu;

namespace {

std::vector<const KernelTable*> supported_tables() {
  std::vector<const KernelTable*> tables;  // best first
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("fma"))
    tables.push_back(&avx512::kernel_table());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    tables.push_back(&avx2::kernel_table());
#endif
  tables.push_back(&baseline::kernel_table());
  return tables;
}

const KernelTable* active_table = nullptr;

const KernelTable& kernels() { return *active_table; }

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const KernelTable* table : supported_tables()) names.emplace_back(table->isa);
  return names;
}

void set_isa(const std::string& name) {
  for (const KernelTable* table : supported_tables())
    if (name == table->isa) {
      active_table = table;
      return;
    }
  std::string names;
  for (const std::string& isa : available_isas()) names += (names.empty() ? "" : ", ") + isa;
  throw py::value_error("sed_kernels._cpu.set_isa: instruction set '" + name +
                        "' is not built or not supported by this CPU; available: " + names);
}

int dtype_index(const std::string& dtype) {
  if (dtype == "float32") return 0;
  if (dtype == "float64") return 1;
  throw py::value_error("sed_kernels._cpu: compute dtype must be 'float32' or 'float64', got '" +
                        dtype + "' (the Python launcher converts float16/bfloat16 to float32)");
}

using sed_bindings::ptr;
constexpr auto steps = sed_bindings::strided_steps<StridedSteps>;

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() =
      "CPU (OpenMP) kernels of sed_kernels' time and feature attention on raw pointers. "
      "Use the launchers in sed_kernels.cpu, not these functions directly.";
  active_table = supported_tables().front();

  m.def("isa", [] { return std::string(kernels().isa); },
        "Instruction set of the kernels in use (avx512, avx2 or baseline).");
  m.def("available_isas", &available_isas,
        "Instruction sets built into this module that this CPU supports, best first.");
  m.def("set_isa", &set_isa, py::arg("name"),
        "Use the kernels compiled for `name` (for tests and benchmarks of each variant).");
  m.def("openmp", [] {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  }, "Whether the module was built with OpenMP (otherwise the kernels run on one thread).");

  m.def(
      "time_attention_forward",
      [](std::uintptr_t h, int64_t stride_b, int64_t stride_t, int64_t stride_h, std::uintptr_t q,
         std::uintptr_t lengths, std::uintptr_t out, std::uintptr_t lse, int64_t batch,
         int64_t steps_, int64_t hidden, const std::string& dtype, int num_threads) {
        const TimeForwardArgs args{steps(h, stride_b, stride_t, stride_h), ptr<const void*>(q),
                                   ptr<const int64_t*>(lengths), ptr<void*>(out), ptr<void*>(lse),
                                   Sizes{batch, steps_, hidden, 0, num_threads}};
        auto kernel = kernels().time_forward[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("h"), py::arg("stride_b"), py::arg("stride_t"), py::arg("stride_h"), py::arg("q"),
      py::arg("lengths"), py::arg("out"), py::arg("lse"), py::arg("batch"), py::arg("steps"),
      py::arg("hidden"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "time_attention_backward",
      [](std::uintptr_t grad_out, std::uintptr_t h, int64_t stride_b, int64_t stride_t,
         int64_t stride_h, std::uintptr_t q, std::uintptr_t lengths, std::uintptr_t out,
         std::uintptr_t lse, std::uintptr_t grad_h, std::uintptr_t grad_q, int64_t batch,
         int64_t steps_, int64_t hidden, const std::string& dtype, int num_threads) {
        const TimeBackwardArgs args{ptr<const void*>(grad_out),
                                    steps(h, stride_b, stride_t, stride_h),
                                    ptr<const void*>(q),
                                    ptr<const int64_t*>(lengths),
                                    ptr<const void*>(out),
                                    ptr<const void*>(lse),
                                    ptr<void*>(grad_h),
                                    ptr<void*>(grad_q),
                                    Sizes{batch, steps_, hidden, 0, num_threads}};
        auto kernel = kernels().time_backward[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("grad_out"), py::arg("h"), py::arg("stride_b"), py::arg("stride_t"),
      py::arg("stride_h"), py::arg("q"), py::arg("lengths"), py::arg("out"), py::arg("lse"),
      py::arg("grad_h"), py::arg("grad_q"), py::arg("batch"), py::arg("steps"), py::arg("hidden"),
      py::arg("dtype"), py::arg("num_threads"));

  // Feature attention: the fused steps between the launcher's torch.mm calls (kernels.h).
  m.def(
      "pack_steps",
      [](std::uintptr_t h, int64_t stride_b, int64_t stride_t, int64_t stride_h,
         std::uintptr_t lengths, std::uintptr_t packed, int64_t batch, int64_t steps_,
         int64_t hidden, const std::string& dtype, int num_threads) {
        const PackArgs args{steps(h, stride_b, stride_t, stride_h), ptr<const int64_t*>(lengths),
                            ptr<void*>(packed), Sizes{batch, steps_, hidden, 0, num_threads}};
        auto kernel = kernels().pack[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("h"), py::arg("stride_b"), py::arg("stride_t"), py::arg("stride_h"),
      py::arg("lengths"), py::arg("packed"), py::arg("batch"), py::arg("steps"),
      py::arg("hidden"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "unpack_steps",
      [](std::uintptr_t packed, std::uintptr_t lengths, std::uintptr_t out, int64_t batch,
         int64_t steps_, int64_t hidden, const std::string& dtype, int num_threads) {
        const UnpackArgs args{ptr<const void*>(packed), ptr<const int64_t*>(lengths),
                              ptr<void*>(out), Sizes{batch, steps_, hidden, 0, num_threads}};
        auto kernel = kernels().unpack[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("packed"), py::arg("lengths"), py::arg("out"), py::arg("batch"), py::arg("steps"),
      py::arg("hidden"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "softmax_pool",
      [](std::uintptr_t scores, std::uintptr_t packed_h, std::uintptr_t lengths,
         std::uintptr_t out, int64_t batch, int64_t hidden, const std::string& dtype,
         int num_threads) {
        const SoftmaxPoolArgs args{ptr<void*>(scores), ptr<const void*>(packed_h),
                                   ptr<const int64_t*>(lengths), ptr<void*>(out),
                                   Sizes{batch, 0, hidden, 0, num_threads}};
        auto kernel = kernels().softmax_pool[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("scores"), py::arg("packed_h"), py::arg("lengths"), py::arg("out"),
      py::arg("batch"), py::arg("hidden"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "softmax_backward",
      [](std::uintptr_t weights, std::uintptr_t packed_h, std::uintptr_t grad_out,
         std::uintptr_t lengths, std::uintptr_t grad_scores, std::uintptr_t grad_h,
         int64_t batch, int64_t hidden, const std::string& dtype, int num_threads) {
        const SoftmaxBackwardArgs args{ptr<const void*>(weights),     ptr<const void*>(packed_h),
                                       ptr<const void*>(grad_out),    ptr<const int64_t*>(lengths),
                                       ptr<void*>(grad_scores),       ptr<void*>(grad_h),
                                       Sizes{batch, 0, hidden, 0, num_threads}};
        auto kernel = kernels().softmax_backward[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("weights"), py::arg("packed_h"), py::arg("grad_out"), py::arg("lengths"),
      py::arg("grad_scores"), py::arg("grad_h"), py::arg("batch"), py::arg("hidden"),
      py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "tanh_backward",
      [](std::uintptr_t grad, std::uintptr_t tanh_out, int64_t count, const std::string& dtype,
         int num_threads) {
        const TanhBackwardArgs args{ptr<void*>(grad), ptr<const void*>(tanh_out), count,
                                    Sizes{0, 0, 0, 0, num_threads}};
        auto kernel = kernels().tanh_backward[dtype_index(dtype)];
        py::gil_scoped_release release;
        kernel(args);
      },
      py::arg("grad"), py::arg("tanh_out"), py::arg("count"), py::arg("dtype"),
      py::arg("num_threads"));
}
