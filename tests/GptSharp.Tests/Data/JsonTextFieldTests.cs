using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using GptSharp.Data;

namespace GptSharp.Tests.Data;

/// <summary>
/// The JSON Lines text field (<see cref="DocumentReader.JsonText"/>: the fast scan, with Utf8JsonReader behind it) against
/// System.Text.Json's <see cref="JsonDocument"/> as the spec's referee: the same lines accepted, the same text, on written
/// cases (every escape, surrogate pairs, invalid UTF-8, bad numbers, trailing bytes) and on many random and mutated lines.
/// </summary>
public sealed class JsonTextFieldTests
{
    private static byte[]? Text(string line, string field = "text") => Text(Encoding.UTF8.GetBytes(line), field);

    private static byte[]? Text(byte[] line, string field = "text")
    {
        byte[] scratch = [];
        return DocumentReader.JsonText(line, 7, "f.jsonl", field, ref scratch, out var text) ? text.ToArray() : null;
    }

    private static string Error(string line) => Error(Encoding.UTF8.GetBytes(line));

    private static string Error(byte[] line) => Assert.Throws<InvalidDataException>(() => Text(line)).Message;

    [Theory]
    [InlineData(@"{""text"":""plain""}", "plain")]
    [InlineData(@"{""text"":""a\""b\\c\/d\be\ff\ng\rh\ti""}", "a\"b\\c/d\be\ff\ng\rh\ti")]
    [InlineData(@"{""text"":""\u0041\u00e9\u00E9\u20ac\u0000""}", "Aéé€\0")]
    [InlineData(@"{""text"":""\ud83d\ude00 \uD83D\uDE00""}", "😀 😀")]
    [InlineData(@"{""text"":""raw 😀 é 日本""}", "raw 😀 é 日本")]
    [InlineData(" \t{ \"id\" : -0.5e+3 , \"meta\":{\"text\":\"no\",\"x\":[1,{\"y\":[]},true,false,null]}, \"text\" : \"yes\" , \"z\":\"\\u0022\" } \t", "yes")]
    [InlineData(@"{""text"":""first"",""text"":""second""}", "first")]
    [InlineData(@"{""\u0074ext"":""escaped key""}", "escaped key")]
    [InlineData(@"{""text"":""""}", "")]
    public void TheTextIsUnescapedIntoUtf8(string line, string expected) => Assert.Equal(Encoding.UTF8.GetBytes(expected), Text(line));

    [Theory]
    [InlineData(@"{""text"":""\ud83d""}", "\uFFFD")]                  // a lone high surrogate at the end
    [InlineData(@"{""text"":""\ud83dx""}", "\uFFFDx")]                // followed by a plain character
    [InlineData(@"{""text"":""\ude00\ud83d""}", "\uFFFD\uFFFD")]      // low then high: two lone ones
    [InlineData(@"{""text"":""\ud83d\ud83d\ude00""}", "\uFFFD😀")]    // high, then a pair
    [InlineData(@"{""text"":""\ud83d\n""}", "\uFFFD\n")]
    public void LoneSurrogatesBecomeTheReplacementCharacterAsInTiktoken(string line, string expected) =>
        Assert.Equal(Encoding.UTF8.GetBytes(expected), Text(line));

    [Fact]
    public void NullTextIsNoDocument()
    {
        Assert.Null(Text(@"{""id"":1,""text"":null}"));
        Assert.Null(Text(@"{""text"" : null , ""more"":[1]}"));
    }

    [Theory]
    [InlineData(@"{""text"":""x""} tail", "not valid JSON")]
    [InlineData(@"{""text"":""x""}{}", "not valid JSON")]
    [InlineData(@"{""text"":""x"",}", "not valid JSON")]
    [InlineData(@"{""text"":""x"", broken", "not valid JSON")]
    [InlineData(@"{""n"":01,""text"":""x""}", "not valid JSON")]
    [InlineData(@"{""n"":1.,""text"":""x""}", "not valid JSON")]
    [InlineData(@"{""n"":+1,""text"":""x""}", "not valid JSON")]
    [InlineData(@"{""n"":tru,""text"":""x""}", "not valid JSON")]
    [InlineData(@"{""text"":""bad \x escape""}", "not valid JSON")]
    [InlineData(@"{""text"":""bad \u12G4 escape""}", "not valid JSON")]
    [InlineData("{\"text\":\"raw\ttab\"}", "not valid JSON")]
    [InlineData(@"{""text"":'single'}", "not valid JSON")]
    [InlineData(@"{""text"":12}", "field \"text\" is Number, expected a string")]
    [InlineData(@"{""other"":""x""}", "has no field \"text\"")]
    [InlineData(@"{}", "has no field \"text\"")]
    [InlineData(@"[""text""]", "is not a JSON object")]
    public void BadLinesAreOneLineNamingFileAndLine(string line, string expected)
    {
        string message = Error(line);
        Assert.StartsWith("f.jsonl: line 7", message);
        Assert.Contains(expected, message);
    }

    [Fact]
    public void InvalidUtf8AnywhereInTheLineIsAnError()
    {
        byte[] inText = [.. "{\"text\":\"caf"u8, 0xE9, .. "\"}"u8];
        byte[] inOtherField = [.. "{\"url\":\""u8, 0xC3, .. "\",\"text\":\"ok\"}"u8];
        byte[] overlong = [.. "{\"text\":\""u8, 0xC0, 0xAF, .. "\"}"u8];
        byte[] encodedSurrogate = [.. "{\"text\":\""u8, 0xED, 0xA0, 0x80, .. "\"}"u8];
        foreach (var line in new[] { inText, inOtherField, overlong, encodedSurrogate })
            Assert.Contains("line 7 is not valid UTF-8", Error(line));
    }

    [Fact]
    public void DeepNestingIsReadUpToTheReadersLimit()
    {
        string Nested(int depth) => "{\"a\":" + new string('[', depth) + new string(']', depth) + ",\"text\":\"deep\"}";
        Assert.Equal("deep"u8.ToArray(), Text(Nested(40))); // past the scan's 32: the full reader takes it
        Assert.Contains("not valid JSON", Error(Nested(100)));
    }

    [Fact]
    public void RandomAndMutatedLinesAgreeWithJsonDocument()
    {
        var random = new Random(2024);
        int accepted = 0, rejected = 0, scanned = 0;
        for (int n = 0; n < 20_000; n++)
        {
            var builder = new StringBuilder();
            RandomObject(random, builder, 0, withText: random.Next(10) > 0);
            byte[] line = Encoding.UTF8.GetBytes(builder.ToString());
            if (random.Next(2) == 0) line = Mutate(random, line);
            var expected = Reference(line);
            if (JsonTextField.Find(line, "text"u8, out _, out _, out _) != JsonTextField.Scan.Unsure) scanned++;
            if (expected.Valid)
            {
                byte[]? text = Text(line);
                if (expected.Text is { } t) Assert.Equal(t, text);
                else if (expected.IsNull) Assert.Null(text);
                else Assert.NotNull(text); // a lone surrogate: JsonDocument refuses to unescape it, the reader gives U+FFFD
                accepted++;
            }
            else
            {
                Assert.Throws<InvalidDataException>(() => Text(line));
                rejected++;
            }
        }
        // Most valid lines are answered by the scan itself, not by the reader behind it.
        Assert.True(accepted > 5_000 && rejected > 5_000 && scanned > accepted * 3 / 4, $"{accepted} accepted ({scanned} by the scan), {rejected} rejected");
    }

    /// <summary>What the spec says of a line: valid (one object, UTF-8, its first "text" a string or null) and the text.</summary>
    private static (bool Valid, byte[]? Text, bool IsNull) Reference(byte[] line)
    {
        if (!Utf8.IsValid(line)) return (false, null, false);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line);
        }
        catch (JsonException)
        {
            return (false, null, false);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) return (false, null, false);
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name != "text") continue;
                if (property.Value.ValueKind == JsonValueKind.Null) return (true, null, true);
                if (property.Value.ValueKind != JsonValueKind.String) return (false, null, false);
                try
                {
                    return (true, Encoding.UTF8.GetBytes(property.Value.GetString()!), false);
                }
                catch (InvalidOperationException)
                {
                    return (true, null, false);
                }
            }
            return (false, null, false);
        }
    }

    private static readonly string[] Keys = ["text", "id", "meta", "url", "tex", "texts", "Text", ""];

    private static void RandomObject(Random random, StringBuilder s, int depth, bool withText)
    {
        s.Append(Space(random)).Append('{');
        int members = random.Next(depth == 0 ? 1 : 0, 4);
        int textAt = withText ? random.Next(members + 1) : -1;
        bool first = true;
        for (int m = 0; m <= members; m++)
        {
            bool isText = m == textAt;
            if (m == members && !isText) break;
            if (!first) s.Append(Space(random)).Append(',');
            first = false;
            s.Append(Space(random)).Append(isText ? "\"text\"" : Quote(Keys[random.Next(Keys.Length)])).Append(Space(random)).Append(':').Append(Space(random));
            if (isText && random.Next(8) == 0) s.Append("null");
            else if (isText) s.Append(RandomString(random));
            else RandomValue(random, s, depth + 1);
        }
        s.Append(Space(random)).Append('}').Append(Space(random));
    }

    private static void RandomValue(Random random, StringBuilder s, int depth)
    {
        switch (random.Next(depth > 3 ? 4 : 6))
        {
            case 0: s.Append(RandomString(random)); break;
            case 1: s.Append(new[] { "0", "-1", "12.5", "1e9", "-0.0E-2", "123456789012345678901234567890" }[random.Next(6)]); break;
            case 2: s.Append(new[] { "true", "false", "null" }[random.Next(3)]); break;
            case 3: s.Append(Quote("")); break;
            case 4:
                s.Append('[');
                int n = random.Next(4);
                for (int i = 0; i < n; i++)
                {
                    if (i > 0) s.Append(',');
                    RandomValue(random, s, depth + 1);
                }
                s.Append(']');
                break;
            default: RandomObject(random, s, depth, withText: random.Next(3) == 0); break;
        }
    }

    private static string Space(Random random) => random.Next(4) == 0 ? new[] { " ", "\t", "  ", "\r", " \n" }[random.Next(5)] : "";

    private static string Quote(string key) => JsonSerializer.Serialize(key);

    private static readonly string[] Pieces =
        ["a", "word ", "\\n", "\\\"", "\\\\", "\\/", "\\b\\f\\r\\t", "\\u0041", "\\u00e9", "\\uD83D\\uDE00", "\\ud83d", "\\udE00", "é", "日本", "🙂", " ", "\\u0000", "<|endoftext|>"];

    private static string RandomString(Random random)
    {
        var s = new StringBuilder("\"");
        int n = random.Next(12);
        for (int i = 0; i < n; i++) s.Append(Pieces[random.Next(Pieces.Length)]);
        if (random.Next(3) == 0) s.Append(new string('x', random.Next(100, 3000))); // past one vector of the scan
        return s.Append('"').ToString();
    }

    private static readonly byte[] Interesting = [(byte)'"', (byte)'\\', (byte)'{', (byte)'}', (byte)'[', (byte)']', (byte)',', (byte)':', (byte)'u',
        (byte)'0', (byte)'e', (byte)'-', (byte)' ', (byte)'n', 0x01, 0x1F, 0x7F, 0xC3, 0xA9, 0xFF, 0xED];

    private static byte[] Mutate(Random random, byte[] line)
    {
        var bytes = new List<byte>(line);
        int edits = random.Next(1, 4);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = random.Next(bytes.Count);
            byte b = Interesting[random.Next(Interesting.Length)];
            switch (random.Next(3))
            {
                case 0: bytes[at] = b; break;
                case 1: bytes.Insert(at, b); break;
                default: bytes.RemoveAt(at); break;
            }
        }
        return [.. bytes];
    }
}
