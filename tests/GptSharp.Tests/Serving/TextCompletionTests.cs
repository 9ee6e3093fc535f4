using GptSharp.Generation;
using GptSharp.Serving;
using GptSharp.Tokenization;

namespace GptSharp.Tests.Serving;

/// <summary>How a choice's tokens become text: whole characters, exact stop cuts, held-back stop prefixes.</summary>
public class TextCompletionTests
{
    private static (List<CompletionPiece> Pieces, CompletionPiece? Last) Feed(string text, IReadOnlyList<string> stops)
    {
        int[] ids = Gpt2Tokenizer.Instance.Encode(text);
        var choice = new TextCompletion.ChoiceText(0, stops);
        var pieces = new List<CompletionPiece>();
        foreach (int id in ids)
        {
            if (choice.FinishReason is not null) break;
            if (choice.Add(new SequenceEvent(0, id, 0, null)) is { } piece) pieces.Add(piece);
        }
        CompletionPiece? last = choice.FinishReason is null ? choice.End("length", ids.Length) : null;
        if (last is not null) pieces.Add(last);
        return (pieces, last);
    }

    [Fact]
    public void ACharacterSplitOverTokensArrivesWhole()
    {
        const string text = "smile 😀 and 漢字 done";
        int[] ids = Gpt2Tokenizer.Instance.Encode(text);
        var (pieces, _) = Feed(text, []);
        Assert.Equal(text, string.Concat(pieces.Select(p => p.Text)));
        Assert.DoesNotContain(pieces, p => p.Text.Contains('\uFFFD') || (p.Text.Length > 0 && char.IsHighSurrogate(p.Text[^1])));
        // Some tokens hold only part of a character: fewer pieces with text than tokens.
        Assert.True(pieces.Count(p => p.Text.Length > 0) < ids.Length);
        Assert.Contains(pieces, p => p.Text.Contains("😀"));
        Assert.Equal(ids.Length, pieces.Sum(p => p.Tokens.Count));
    }

    [Fact]
    public void StopCutsExactlyAndHoldsBackWhatMightStartIt()
    {
        var (pieces, last) = Feed("one two STOP three", ["STOP", "zzz"]);
        Assert.Null(last); // ended by the stop text, not by the end of the tokens
        Assert.Equal("one two ", string.Concat(pieces.Select(p => p.Text)));
        Assert.Equal("stop", pieces[^1].FinishReason);
        // "ST" alone never went out before it was known to be the stop text.
        Assert.DoesNotContain(pieces, p => p.Text.Contains('S'));

        // A held-back prefix that turns out not to be the stop text is released, nothing lost.
        var (released, end) = Feed("one STAR two", ["STOP"]);
        Assert.Equal("one STAR two", string.Concat(released.Select(p => p.Text)));
        Assert.Equal("length", end!.FinishReason);
    }
}
