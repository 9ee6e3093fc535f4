using System.Text;

namespace GptSharp.Tokenization;

/// <summary>
/// Decodes ids one at a time while a model generates them, and hands out only complete characters: a
/// character whose UTF-8 bytes span several tokens (an emoji, a CJK character) comes out once, when its last
/// byte arrives. All pieces joined, plus <see cref="Flush"/>, equal <see cref="Gpt2Tokenizer.Decode"/> of all the ids
/// (ill-formed bytes become U+FFFD the moment they are known to be ill-formed).
/// </summary>
public sealed class StreamingDecoder
{
    private readonly Gpt2Tokenizer _tokenizer;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    public StreamingDecoder(Gpt2Tokenizer tokenizer) => _tokenizer = tokenizer;

    /// <summary>Adds one id; returns the text it completes (empty while a character is still incomplete).</summary>
    public string Push(int id)
    {
        ReadOnlySpan<byte> bytes = _tokenizer.TokenBytes(id);
        return Convert(bytes, flush: false);
    }

    /// <summary>Adds several ids; returns the text they complete.</summary>
    public string Push(ReadOnlySpan<int> ids)
    {
        var text = new StringBuilder();
        foreach (int id in ids) text.Append(Push(id));
        return text.ToString();
    }

    /// <summary>Ends the stream: returns U+FFFD for an incomplete trailing character (if any) and starts afresh.</summary>
    public string Flush() => Convert([], flush: true);

    /// <summary>Forgets any pending bytes.</summary>
    public void Reset() => _utf8.Reset();

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = _utf8.GetCharCount(bytes, flush: false) + 4;
        if (_chars.Length < needed) _chars = new char[Math.Max(needed, 2 * _chars.Length)];
        int count = _utf8.GetChars(bytes, _chars, flush);
        return count == 0 ? string.Empty : new string(_chars, 0, count);
    }
}
