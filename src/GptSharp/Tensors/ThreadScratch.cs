using System.Runtime.InteropServices;

namespace GptSharp.Tensors;

/// <summary>
/// Per-thread float32 scratch buffers for kernels (GEMM packing, int8 dequantization): aligned, grown on demand and then
/// reused for the life of the thread, so a hot loop never allocates. Each kernel keeps its own [ThreadStatic] handle
/// and capacity and grows it here.
/// </summary>
internal static unsafe class ThreadScratch
{
    public static float* Grow(ref nint buffer, ref long capacity, long floats)
    {
        if (floats > capacity)
        {
            if (buffer != 0) NativeMemory.AlignedFree((void*)buffer);
            buffer = (nint)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), Tensor.Alignment);
            capacity = floats;
        }
        return (float*)buffer;
    }
}
