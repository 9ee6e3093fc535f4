using System.Runtime.Intrinsics.X86;

namespace GptSharp.Benchmarks;

/// <summary>The CPU a benchmark ran on, for its first line: timings mean little without it (the CPU changes between sessions).</summary>
internal static class Machine
{
    public static string Description => $"CPU {CpuName()}, {Environment.ProcessorCount} logical cores, ISA {Isa()}";

    private static string Isa() => Avx512F.IsSupported ? "AVX-512" : Avx2.IsSupported && Fma.IsSupported ? "AVX2+FMA" : "scalar";

    private static string CpuName()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal))
                    return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return "unknown";
    }
}
