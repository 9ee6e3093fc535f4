using System.Text;

namespace GptSharp.Benchmarks;

/// <summary>
/// An English-like benchmark corpus: words of The Verdict drawn at random (seeded) and joined by spaces, with a
/// blank line every 20–79 words. bench/tiktoken/corpus.mjs builds the identical text for tiktoken (same
/// splitmix32 stream, same word list), and both print its length and FNV-1a hash to prove it.
/// </summary>
public static class EnglishCorpus
{
    public const uint DefaultSeed = 123;

    /// <summary>50 MiB: at least 50 MB whichever way a megabyte is counted.</summary>
    public const int DefaultBytes = 50 << 20;

    public static string Generate(string verdict, int targetBytes = DefaultBytes, uint seed = DefaultSeed)
    {
        string[] words = verdict.Split([' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries);
        uint state = seed;
        uint Next()
        {
            state += 0x9E3779B9u;
            uint z = state;
            z = (z ^ (z >> 16)) * 0x85EBCA6Bu;
            z = (z ^ (z >> 13)) * 0xC2B2AE35u;
            return z ^ (z >> 16);
        }

        var text = new StringBuilder(targetBytes + 1024);
        long bytes = 0;
        int inParagraph = 0;
        uint paragraphLength = 20 + Next() % 60;
        while (bytes < targetBytes)
        {
            string word = words[Next() % (uint)words.Length];
            text.Append(word);
            bytes += Encoding.UTF8.GetByteCount(word);
            if (++inParagraph == paragraphLength)
            {
                text.Append("\n\n");
                bytes += 2;
                inParagraph = 0;
                paragraphLength = 20 + Next() % 60;
            }
            else
            {
                text.Append(' ');
                bytes++;
            }
        }
        return text.ToString();
    }

    /// <summary>32-bit FNV-1a of the UTF-8 bytes, printed by both benchmarks to show they encode the same text.</summary>
    public static uint Fnv1a(ReadOnlySpan<byte> utf8)
    {
        uint hash = 2166136261u;
        foreach (byte b in utf8) hash = (hash ^ b) * 16777619u;
        return hash;
    }

    /// <summary>A checksum of token ids, computed the same way by bench/tiktoken/bench.mjs.</summary>
    public static uint IdChecksum(ReadOnlySpan<int> ids)
    {
        uint hash = 2166136261u;
        foreach (int id in ids) hash = (hash ^ (uint)id) * 16777619u;
        return hash;
    }
}
