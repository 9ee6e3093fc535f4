using System.Runtime.InteropServices;
using GptSharp.Tensors;

namespace GptSharp.Tests.Tensors;

/// <summary>Huge pages for streamed weights and page hand-back: the advice lands on whole pages and never changes data.</summary>
public unsafe class PageAdviceTests
{
    private const string ThpSetting = "/sys/kernel/mm/transparent_hugepage/enabled";

    [SkippableFact]
    public void AFreshLargeBufferIsBackedByHugePagesWhereTheKernelOffersThem()
    {
        Skip.IfNot(OperatingSystem.IsLinux() && File.Exists(ThpSetting), "skipped: transparent huge pages need Linux with " + ThpSetting);
        Skip.If(File.ReadAllText(ThpSetting).Contains("[never]"), "skipped: transparent huge pages are off here ([never] in " + ThpSetting + ")");
        const long bytes = 16L << 20;
        // Not 2 MiB-aligned on purpose: only the whole huge pages inside are advised.
        byte* block = (byte*)NativeMemory.AllocZeroed((nuint)bytes);
        try
        {
            Assert.True(PageAdvice.PreferHugePages(block + 64, bytes - 64), "madvise(MADV_HUGEPAGE) was refused");
            for (long i = 0; i < bytes; i += 4096) block[i] = (byte)(i >> 12);
            for (long i = 0; i < bytes; i += 4096) Assert.Equal((byte)(i >> 12), block[i]);
            // Handing pages back zeroes whole pages inside the range only: the bytes just outside keep their values.
            PageAdvice.Discard(block + 4096 + 1, 3 * 4096);
            Assert.Equal(1, block[4096]);
            Assert.Equal(0, block[2 * 4096]);
            Assert.Equal(0, block[3 * 4096]);
            Assert.Equal(4, block[4 * 4096]);
        }
        finally
        {
            NativeMemory.Free(block);
        }
    }

    [Fact]
    public void ARangeHoldingNoWholeHugePageIsLeftAlone()
    {
        byte* block = (byte*)NativeMemory.AllocZeroed(1 << 20);
        try
        {
            Assert.False(PageAdvice.PreferHugePages(block, 1 << 20));
        }
        finally
        {
            NativeMemory.Free(block);
        }
    }
}
