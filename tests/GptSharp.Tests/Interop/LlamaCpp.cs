using LLama;
using LLama.Common;
using LLama.Exceptions;
using LLama.Native;

namespace GptSharp.Tests.Interop;

/// <summary>
/// llama.cpp as LLamaSharp 0.30 ships it (LLamaSharp.Backend.Cpu: its native libraries for noavx/avx/avx2/avx512).
/// A test that needs it skips (visibly, with the loader's reason) when <see cref="Unavailable"/> says the native library
/// cannot load (another OS or CPU, an older glibc). Shared with bench/ (gguf-quick), which links this file.
/// </summary>
internal static class LlamaCpp
{
    private static readonly Lazy<string?> s_unavailable = new(Probe);

    /// <summary>Null when llama.cpp's native library loads here, else why not.</summary>
    public static string? Unavailable => s_unavailable.Value;

    private static string? Probe()
    {
        // To see (and check in CI) what a machine without a loadable llama.cpp prints: the same skip, this reason.
        if (Environment.GetEnvironmentVariable("GPTSHARP_NO_LLAMACPP") is { Length: > 0 })
            return "GPTSHARP_NO_LLAMACPP is set (llama.cpp's native library is not loaded)";
        try
        {
            // llama.cpp logs every load to stderr; only its errors are worth a test log.
            NativeLibraryConfig.All.WithLogCallback((level, message) =>
            {
                if (level == LLamaLogLevel.Error) Console.Error.Write($"llama.cpp: {message}");
            });
            NativeApi.llama_empty_call();
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or RuntimeError or EntryPointNotFoundException or BadImageFormatException or InvalidOperationException)
        {
            return $"{e.GetType().Name}: {(e.InnerException ?? e).Message}";
        }
    }

    private static ModelParams Params(string gguf, int context, int threads) => new(gguf)
    {
        ContextSize = (uint)context,
        BatchSize = (uint)context,
        UBatchSize = (uint)context,
        Threads = threads,
        BatchThreads = threads,
        GpuLayerCount = 0,
    };

    /// <summary>An open model and context (one sequence, <paramref name="context"/> positions).</summary>
    public sealed class Session : IDisposable
    {
        private readonly LLamaWeights _weights;
        private readonly LLamaContext _context;
        private readonly LLamaBatch _batch = new();

        /// <param name="threads">llama.cpp's threads (default: the cores, at most 4).</param>
        public Session(string gguf, int context, int? threads = null)
        {
            var p = Params(gguf, context, threads ?? Math.Max(1, Math.Min(Environment.ProcessorCount, 4)));
            _weights = LLamaWeights.LoadFromFile(p);
            _context = _weights.CreateContext(p);
        }

        /// <summary>Clears the KV cache (a new sequence from position 0).</summary>
        public void Reset() => _context.NativeHandle.MemoryClear(true);

        /// <summary>Decodes <paramref name="tokens"/> from <paramref name="position"/> on; logits for every position when <paramref name="all"/>, else the last.</summary>
        public float[][] Decode(ReadOnlySpan<int> tokens, int position, bool all)
        {
            _batch.Clear();
            for (int i = 0; i < tokens.Length; i++) _batch.Add(tokens[i], position + i, LLamaSeqId.Zero, all || i == tokens.Length - 1);
            var result = _context.NativeHandle.Decode(_batch);
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {result}");
            if (!all) return [_context.NativeHandle.GetLogitsIth(tokens.Length - 1).ToArray()];
            var logits = new float[tokens.Length][];
            for (int i = 0; i < tokens.Length; i++) logits[i] = _context.NativeHandle.GetLogitsIth(i).ToArray();
            return logits;
        }

        /// <summary>Greedy decoding: the prompt in one batch, then one token at a time through the KV cache.</summary>
        public int[] Greedy(int[] prompt, int newTokens)
        {
            Reset();
            var ids = new List<int>();
            float[] logits = Decode(prompt, 0, all: false)[0];
            for (int step = 0; step < newTokens; step++)
            {
                int next = ArgMax(logits);
                ids.Add(next);
                logits = Decode([next], prompt.Length + step, all: false)[0];
            }
            return [.. ids];
        }

        public void Dispose()
        {
            _context.Dispose();
            _weights.Dispose();
        }
    }

    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>llama.cpp's quantizer (llama_model_quantize) from a GGUF to another.</summary>
    public static void Quantize(string source, string destination, LLamaFtype type)
    {
        if (!LLamaQuantizer.Quantize(source, destination, type, nthread: 2))
            throw new InvalidOperationException($"llama.cpp could not quantize {source} to {type}");
    }
}
