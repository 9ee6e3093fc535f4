using System.Runtime.InteropServices;

namespace GptSharp.Tensors;

/// <summary>
/// What the kernel is told about large native buffers (Linux <c>madvise</c>; elsewhere nothing): back them with
/// transparent huge pages, or hand their pages back. Only whole pages inside a range are advised, so a neighbour's
/// memory (and the allocator's bookkeeping) is never touched.
/// </summary>
internal static unsafe partial class PageAdvice
{
    /// <summary>Whether <see cref="PreferHugePages"/> asks at all (a benchmark switch: <c>book-decode</c> with PAGES=ab).</summary>
    internal static bool HugePages { get; set; } = true;

    private const long SmallPage = 4096, HugePage = 2 << 20;
    private const int MadvDontNeed = 4, MadvHugePage = 14;

    /// <summary>
    /// Asks for 2 MiB pages over the untouched buffer [<paramref name="start"/>, +<paramref name="bytes"/>): a weight
    /// matrix streamed once per token crosses a 4 KiB page every 1,024 floats, and the CPU's prefetchers stop at each
    /// page boundary and its TLB holds a few hundred entries. Call it before the pages are first written: it decides how
    /// they are faulted in. Where THP is off (or "never"), the call fails quietly and nothing changes. Returns whether the
    /// kernel took the advice (false also for a range holding no whole huge page: nothing to advise).
    /// </summary>
    public static bool PreferHugePages(void* start, long bytes)
    {
        if (!HugePages || !OperatingSystem.IsLinux() || bytes < 2 * HugePage) return false;
        return Advise(start, bytes, HugePage, MadvHugePage);
    }

    /// <summary>Hands the whole pages inside the range back to the OS (MADV_DONTNEED): they read as zeros if touched again.</summary>
    public static void Discard(void* start, long bytes)
    {
        if (!OperatingSystem.IsLinux()) return;
        Advise(start, bytes, SmallPage, MadvDontNeed);
    }

    private static bool Advise(void* start, long bytes, long page, int advice)
    {
        long first = ((long)start + page - 1) & ~(page - 1), end = ((long)start + bytes) & ~(page - 1);
        return end > first && madvise((void*)first, (nuint)(end - first), advice) == 0;
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int madvise(void* address, nuint length, int advice);
}
