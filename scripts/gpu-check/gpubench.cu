// gpubench: one compute-bound and one bandwidth-bound CUDA kernel, timed with
// CUDA events (best of several runs). Prints one JSON line, so the same
// binary can run on bare metal and inside a gpucloud instance and the two
// lines can be compared. Built by scripts/gpu-host-check.sh with the host's nvcc.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(x)                                                                  \
    do {                                                                          \
        cudaError_t e_ = (x);                                                     \
        if (e_ != cudaSuccess) {                                                  \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,             \
                    cudaGetErrorString(e_));                                      \
            exit(2);                                                              \
        }                                                                         \
    } while (0)

// Eight independent FMA chains per thread keep the FP32 pipes full.
__global__ void fma_kernel(float *out, int iters, float a, float b) {
    float x0 = threadIdx.x * 1e-7f, x1 = x0 + 1e-7f, x2 = x0 + 2e-7f, x3 = x0 + 3e-7f;
    float x4 = x0 + 4e-7f, x5 = x0 + 5e-7f, x6 = x0 + 6e-7f, x7 = x0 + 7e-7f;
    for (int i = 0; i < iters; ++i) {
        x0 = fmaf(x0, a, b); x1 = fmaf(x1, a, b); x2 = fmaf(x2, a, b); x3 = fmaf(x3, a, b);
        x4 = fmaf(x4, a, b); x5 = fmaf(x5, a, b); x6 = fmaf(x6, a, b); x7 = fmaf(x7, a, b);
    }
    float s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
    if (s == 1234.5678f) out[blockIdx.x * blockDim.x + threadIdx.x] = s;  // keeps the work
}

// A grid-stride copy with 16-byte loads and stores.
__global__ void copy_kernel(const float4 *__restrict__ in, float4 *__restrict__ out, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        out[i] = in[i];
    }
}

int main() {
    int dev = 0;
    CHECK(cudaSetDevice(dev));
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, dev));
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));

    // Compute: FLOPs = 2 (FMA) x 8 chains x iters x threads.
    const int threads = 256, blocks = p.multiProcessorCount * 16, iters = 1 << 18;
    float *sink;
    CHECK(cudaMalloc(&sink, sizeof(float) * threads * blocks));
    fma_kernel<<<blocks, threads>>>(sink, 1024, 0.999f, 0.001f);  // warm-up
    CHECK(cudaDeviceSynchronize());
    float best_ms = 1e30f;
    for (int r = 0; r < 5; ++r) {
        CHECK(cudaEventRecord(start));
        fma_kernel<<<blocks, threads>>>(sink, iters, 0.999f, 0.001f);
        CHECK(cudaEventRecord(stop));
        CHECK(cudaEventSynchronize(stop));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (ms < best_ms) best_ms = ms;
    }
    double flops = 2.0 * 8.0 * iters * (double)threads * blocks;
    double tflops = flops / (best_ms * 1e-3) / 1e12;

    // Bandwidth: 1 GiB read + 1 GiB written per copy.
    const size_t bytes = (size_t)1 << 30, n = bytes / sizeof(float4);
    float4 *a, *b;
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    CHECK(cudaMemset(a, 1, bytes));
    const int cblocks = p.multiProcessorCount * 8;
    copy_kernel<<<cblocks, 1024>>>(a, b, n);  // warm-up
    CHECK(cudaDeviceSynchronize());
    float best_copy = 1e30f;
    for (int r = 0; r < 20; ++r) {
        CHECK(cudaEventRecord(start));
        copy_kernel<<<cblocks, 1024>>>(a, b, n);
        CHECK(cudaEventRecord(stop));
        CHECK(cudaEventSynchronize(stop));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (ms < best_copy) best_copy = ms;
    }
    double gbs = 2.0 * bytes / (best_copy * 1e-3) / 1e9;
    CHECK(cudaGetLastError());
    printf("{\"device\":\"%s\",\"sms\":%d,\"fp32_tflops\":%.3f,\"copy_gbs\":%.1f}\n", p.name,
           p.multiProcessorCount, tflops, gbs);
    return 0;
}
